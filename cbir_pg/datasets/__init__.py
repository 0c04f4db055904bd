"""Dataset import: an adapter registry (one module per source layout) and the importer.

>>> from cbir_pg.datasets import import_dataset
>>> s = import_dataset(dsn, "medmnist", "data/breastmnist.npz", flag="breastmnist")  # doctest: +SKIP

See ``docs/datasets.md`` for each adapter's layout, command and harmonisation rules.
"""

from __future__ import annotations

from pathlib import Path

from cbir_pg.datasets.base import _REGISTRY, Adapter, Record, RowError, register_adapter
from cbir_pg.errors import ConfigError

ADAPTER_MODULES = (
    "radimagenet",
    "nih14",
    "chexpert",
    "covidx",
    "medmnist",
    "folders",
    "dicom",
    "dkfz_splits",
)

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


def _load() -> None:
    import importlib

    for mod in ADAPTER_MODULES:
        importlib.import_module(f"cbir_pg.datasets.{mod}")


def get_adapter(kind: str) -> type[Adapter]:
    """The adapter class registered under ``kind``; a clear error for an unknown kind."""
    _load()
    if kind not in _REGISTRY:
        raise ConfigError(f"unknown dataset kind {kind!r}; known: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[kind]


def list_adapters() -> list[str]:
    _load()
    return sorted(_REGISTRY)


def __getattr__(name: str):
    if name in ("import_dataset", "ImportSummary"):
        from cbir_pg.datasets import importer

        return getattr(importer, name)
    if name in ("dataset_overview", "label_overview", "DatasetOverview", "LabelOverview"):
        from cbir_pg.datasets import catalog

        return getattr(catalog, name)
    raise AttributeError(name)


def import_medmnist_benchmark(dsn: str, data_dir: str | Path, progress: bool = True):
    """Import ``breastmnist.npz`` and ``pneumoniamnist.npz`` (or ``pneumoniamnist_subset.npz``) from
    ``data_dir`` (datasets ``breastmnist`` and ``pneumoniamnist``): one combined US + XR benchmark, 4
    classes; returns their two :class:`ImportSummary`."""
    from cbir_pg.datasets.importer import import_dataset
    from cbir_pg.demo_data import DEMO_FILES, files_in

    d = Path(data_dir)
    found = files_in(d)
    missing = [" or ".join(s.candidates) for s in DEMO_FILES if s.flag not in found]
    if missing:
        raise ConfigError(f"{d}: missing {', '.join(missing)}")
    return [
        import_dataset(dsn, "medmnist", path, flag=flag, progress=progress) for flag, path in found.items()
    ]
