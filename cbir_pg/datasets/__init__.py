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


#: the two shared MedMNIST files and their flags: one combined US + XR benchmark, 4 classes.
MEDMNIST_BENCHMARK = (("breastmnist.npz", "breastmnist"), ("pneumoniamnist_subset.npz", "pneumoniamnist"))


def import_medmnist_benchmark(db: Database, data_dir: str | Path, progress: bool = True):
    """Import ``breastmnist.npz`` and ``pneumoniamnist_subset.npz`` from ``data_dir`` (datasets
    ``breastmnist`` and ``pneumoniamnist``); returns their two :class:`ImportSummary`."""
    from cbir_pg.datasets.importer import import_dataset

    d = Path(data_dir)
    missing = [f for f, _ in MEDMNIST_BENCHMARK if not (d / f).is_file()]
    if missing:
        raise ConfigError(f"{d}: missing {', '.join(missing)}")
    return [
        import_dataset(db, "medmnist", d / f, flag=flag, progress=progress) for f, flag in MEDMNIST_BENCHMARK
    ]
