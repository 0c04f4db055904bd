"""Dataset import: an adapter registry (one module per source layout) and the importer.

>>> from cbir_pg.datasets import import_dataset
>>> s = import_dataset(Database(dsn), "medmnist", "data/breastmnist.npz", flag="breastmnist")  # doctest: +SKIP

See ``docs/datasets.md`` for each adapter's layout, command and harmonisation rules.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

# the adapter modules register themselves on import (one module per source layout)
from cbir_pg.datasets import (  # noqa: F401
    chexpert,
    covidx,
    dicom,
    dkfz_splits,
    folders,
    medmnist,
    nih14,
    radimagenet,
)
from cbir_pg.datasets.base import ADAPTERS, Adapter, Record, RowError, register_adapter
from cbir_pg.errors import ConfigError
from cbir_pg.pacs import dicomweb, listener  # noqa: F401,E402  (the PACS adapters register themselves too)

if TYPE_CHECKING:
    from cbir_pg.db.database import Database

__all__ = [
    "Adapter",
    "Record",
    "RowError",
    "register_adapter",
    "get_adapter",
    "list_adapters",
    "import_dataset",
    "import_medmnist_benchmark",
    "ImportSummary",
    "dataset_overview",
    "label_overview",
]


def get_adapter(kind: str) -> type[Adapter]:
    """The adapter class registered under ``kind``; a clear error for an unknown kind."""
    return ADAPTERS.get(kind)


def list_adapters() -> list[str]:
    return ADAPTERS.keys()


def __getattr__(name: str):
    if name in ("import_dataset", "ImportSummary"):
        from cbir_pg.datasets import importer

        return getattr(importer, name)
    if name in ("dataset_overview", "label_overview", "DatasetOverview", "LabelOverview"):
        from cbir_pg.datasets import catalog

        return getattr(catalog, name)
    raise AttributeError(name)


#: the combined MedMNIST benchmark (US + XR, 4 classes): flag -> file names accepted, in order of preference
MEDMNIST_BENCHMARK_FILES = {
    "breastmnist": ("breastmnist.npz",),
    "pneumoniamnist": ("pneumoniamnist_subset.npz", "pneumoniamnist.npz"),
}


def medmnist_files_in(folder: str | Path) -> dict[str, Path]:
    """``{flag: path}`` of the benchmark files found in ``folder`` (either accepted name of each);
    missing flags are left out."""
    found: dict[str, Path] = {}
    for flag, names in MEDMNIST_BENCHMARK_FILES.items():
        hit = next((Path(folder) / n for n in names if (Path(folder) / n).is_file()), None)
        if hit is not None:
            found[flag] = hit
    return found


def import_medmnist_benchmark(db: Database, data_dir: str | Path, progress: bool = True):
    """Import ``breastmnist.npz`` and ``pneumoniamnist.npz`` (or ``pneumoniamnist_subset.npz``) from
    ``data_dir`` (datasets ``breastmnist`` and ``pneumoniamnist``): one combined US + XR benchmark, 4
    classes; returns their two :class:`ImportSummary`."""
    from cbir_pg.datasets.importer import import_dataset

    d = Path(data_dir)
    found = medmnist_files_in(d)
    missing = [" or ".join(n) for f, n in MEDMNIST_BENCHMARK_FILES.items() if f not in found]
    if missing:
        raise ConfigError(f"{d}: missing {', '.join(missing)}")
    return [
        import_dataset(db, "medmnist", path, flag=flag, progress=progress) for flag, path in found.items()
    ]
