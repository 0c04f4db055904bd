"""RadImageNet (Mei et al., 2022): 1.35M CT, MR and US images in ``modality/region/finding`` folders.

ROOT holds ``RadiologyAI_train.csv``, ``RadiologyAI_val.csv``, ``RadiologyAI_test.csv`` (first column:
the image path, e.g. ``CT/abd/acute_pancreatitis/abd000123.png``, optionally prefixed by
``radiology_ai/``) and the image folders (directly, or under ``ROOT/radiology_ai``). The CSVs are
streamed row by row.

The label is the folder path. Organ-only ultrasound folders (``US/kidney``) become
``US/kidney/normal``; ``US/thyroid_nodule`` becomes ``US/thyroid/nodule``. RadImageNet has no
patient ids, so every image is its own patient; the official splits are kept. Duplicates are
flagged by the importer's pixel-hash dedupe.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from cbir_pg.datasets.base import Adapter, Record, RowError, UnknownLabel, read_csv, register_adapter
from cbir_pg.errors import ConfigError

US_RENAMES = {"thyroid_nodule": ("thyroid", "nodule")}


def folder_label(path: str) -> str:
    """``CT/abd/normal/x.png`` → ``CT/abd/normal``; ``US/kidney/x.png`` → ``US/kidney/normal``."""
    parts = [p for p in PurePosixPath(path.replace("\\", "/")).parts[:-1] if p not in ("radiology_ai", ".")]
    if len(parts) == 2 and parts[0].upper() == "US":
        region, finding = US_RENAMES.get(parts[1].lower(), (parts[1], "normal"))
        return f"US/{region}/{finding}"
    if len(parts) == 3:
        if parts[0].upper() == "US" and parts[1].lower() in US_RENAMES:
            region, finding = US_RENAMES[parts[1].lower()]
            return f"US/{region}/{finding}"
        return "/".join(parts)
    raise UnknownLabel(f"{path}: expected <modality>/<region>/<finding>/<file>")


@register_adapter("radimagenet")
class RadImageNetAdapter(Adapter):
    title = "RadImageNet"
    source_url = "https://www.radimagenet.com/"
    licence = "RadImageNet data use agreement"
    citation = "Mei et al., RadImageNet, Radiology: Artificial Intelligence 4(5), 2022"

    def __init__(self, root, key, options):
        super().__init__(root, key, options)
        self.split_files = {s: self.root / f"RadiologyAI_{s}.csv" for s in ("train", "val", "test")}
        if not any(p.is_file() for p in self.split_files.values()):
            raise ConfigError(f"radimagenet: no RadiologyAI_{{train,val,test}}.csv in {self.root}")
        self.base = self.root / "radiology_ai" if (self.root / "radiology_ai").is_dir() else self.root

    def image_root(self) -> Path:
        return self.base

    def records(self) -> Iterator[Record | RowError]:
        for split, path in self.split_files.items():
            if not path.is_file():
                continue
            for line, row in read_csv(path):
                src = f"{path.name}:{line}"
                first = next(iter(row.values()), None) if row else None
                fname = (row.get("filename") or row.get("path") or first or "").strip()
                if not fname:
                    yield RowError(src, "malformed_row", "empty image path")
                    continue
                rel = (
                    fname[len("radiology_ai/") :]
                    if fname.startswith("radiology_ai/") and self.base != self.root
                    else fname
                )
                try:
                    label = folder_label(rel)
                except UnknownLabel as exc:
                    yield RowError(src, "unknown_label", str(exc))
                    continue
                mod, region, _ = label.split("/")
                yield Record(
                    uri=rel, labels=[label], split=split, patient=None, modality=mod.upper(), region=region
                )
