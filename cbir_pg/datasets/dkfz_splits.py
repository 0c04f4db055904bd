"""The paper's published split CSVs (Denner et al., DKFZ), to load exactly the paper's benchmark.

ROOT is one split CSV, or a folder of them, with the columns ``filepath, dataset, split, modality,
anatomic_region`` followed by one-hot label columns named ``<MOD>/<region>/<finding>``. ``filepath``
is relative to the ``images`` option (default: the CSV's folder). The split is taken as given
(``validate``/``valid`` → ``val``); the source dataset is kept in ``image.extra``. Rows with several
labels are imported and excluded (``multi_label``); rows with none are excluded (``no_label``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

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


@register_adapter("dkfz-splits")
class DKFZSplitsAdapter(Adapter):
    title = "Denner et al. benchmark splits"
    source_url = "https://github.com/MIC-DKFZ/foundation-models-for-cbmir"
    citation = (
        "Denner et al., Leveraging Foundation Models for Content-Based Medical Image Retrieval in Radiology"
    )
    options_help = {"images": "folder the filepath column is relative to (default: the CSV's folder)"}

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
                    patient=None,
                    modality=(row.get("modality") or "").strip().upper() or None,
                    region=(row.get("anatomic_region") or "").strip().lower() or None,
                    extra={"source_dataset": (row.get("dataset") or "").strip()},
                )
