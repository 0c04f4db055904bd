"""The paper's published split CSVs (Denner et al., DKFZ), to load exactly the paper's benchmark.

ROOT is one split CSV, or a folder of them, with the columns ``filepath, dataset, split, modality,
anatomic_region`` followed by one-hot label columns named ``<MOD>/<region>/<finding>``. ``filepath``
is relative to the ``images`` option (default: the CSV's folder). The split is taken as given
(``validate``/``valid`` → ``val``); the source dataset is kept in ``image.extra``. Rows with several
labels are imported and excluded (``multi_label``); rows with none are excluded (``no_label``).

The CSVs have no patient column; the patient is read off the ``filepath`` where the source's layout names
one (:func:`patient_from_filepath`): CheXpert ``.../patient00001/...``, MIMIC-CXR ``.../p10000032/...``,
NIH ChestX-ray14 ``00000001_000.png``; RadImageNet paths name none. ``--metadata-only`` imports the CSVs
without any image file (see :func:`cbir_pg.datasets.importer.import_dataset`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from cbir_pg.datasets.base import Adapter, Record, RowError, read_csv, register_adapter
from cbir_pg.errors import ConfigError

SPLITS = {
    "train": "train",
    "val": "val",
    "valid": "val",
    "validate": "val",
    "validation": "val",
    "test": "test",
}
BASE_COLUMNS = ("filepath", "dataset", "split", "modality", "anatomic_region")
TRUE = {"1", "1.0", "true", "True", "TRUE", "yes"}
_CHEXPERT = re.compile(r"^patient\d+$")
_MIMIC = re.compile(r"^p\d{8}$")
_NIH = re.compile(r"^(\d{8})_\d{3}\.png$", re.IGNORECASE)


def patient_from_filepath(filepath: str) -> str | None:
    """The patient a published ``filepath`` names, prefixed by its source (``chexpert:patient00001``,
    ``mimic:p10000032``, ``nih14:00000001``), or ``None`` when the layout names none (RadImageNet)."""
    parts = PurePosixPath(filepath.replace("\\", "/")).parts
    for p in parts[:-1]:
        if _CHEXPERT.match(p):
            return f"chexpert:{p}"
        if _MIMIC.match(p):
            return f"mimic:{p}"
    m = _NIH.match(parts[-1]) if parts else None
    return f"nih14:{m.group(1)}" if m else None


@register_adapter("dkfz-splits")
class DKFZSplitsAdapter(Adapter):
    title = "Denner et al. benchmark splits"
    source_url = "https://github.com/MIC-DKFZ/foundation-models-for-cbmir"
    citation = (
        "Denner et al., Leveraging Foundation Models for Content-Based Medical Image Retrieval in Radiology"
    )
    options_help = {"images": "folder the filepath column is relative to (default: the CSV's folder)"}
    metadata_only = True

    def __init__(self, root, key, options):
        super().__init__(root, key, options)
        if self.root.is_file():
            self.csvs = [self.root]
        elif self.root.is_dir():
            self.csvs = sorted(self.root.glob("*.csv"))
        else:
            self.csvs = []
        if not self.csvs:
            raise ConfigError(f"dkfz-splits: no split CSV at {self.root}")

    @classmethod
    def default_key(cls, root, options):
        return "dkfz"

    def image_root(self) -> Path:
        if self.options.get("images"):
            return Path(self.options["images"]).expanduser()
        return self.root if self.root.is_dir() else self.root.parent

    def records(self) -> Iterator[Record | RowError]:
        for path in self.csvs:
            label_cols: list[str] | None = None
            for line, row in read_csv(path, BASE_COLUMNS):
                if label_cols is None:
                    label_cols = [c for c in row if c and c.count("/") == 2]
                src = f"{path.name}:{line}"
                fp = (row.get("filepath") or "").strip()
                split = SPLITS.get((row.get("split") or "").strip().lower())
                if not fp or split is None:
                    yield RowError(
                        src, "malformed_row", f"empty filepath or unknown split {row.get('split')!r}"
                    )
                    continue
                labels = [c for c in label_cols if (row.get(c) or "").strip() in TRUE]
                yield Record(
                    uri=fp,
                    labels=labels,
                    split=split,
                    patient=patient_from_filepath(fp),
                    modality=(row.get("modality") or "").strip().upper() or None,
                    region=(row.get("anatomic_region") or "").strip().lower() or None,
                    extra={"source_dataset": (row.get("dataset") or "").strip()},
                )
