"""User data: an image folder (``imagefolder``) and a CSV manifest (``csv``).

**imagefolder.** ``ROOT/<split>/<class>/*`` (split folders ``train``, ``val``/``valid``/``validation``,
``test``) or ``ROOT/<class>/*``, split by a seeded hash (every image its own patient; fractions
option, default ``0.7,0.1,0.2``). The class folder is the source label: a harmonised key is
``<modality>/<region>/<class>`` with the ``modality`` and ``region`` options, or comes from
``--label-map``.

**csv.** ROOT is a manifest with the columns ``path`` and ``label`` and, optionally, ``split``,
``patient``, ``sex``, ``age``, ``modality``, ``region``, ``study`` and ``view``. ``path`` is relative
to the manifest's folder (or the ``images`` option). ``label`` is a full key ``XR/chest/pneumonia`` or
a finding completed by the ``modality``/``region`` columns or options; several labels are separated by
``|``. Rows without a split are split patient-wise by the seed (fractions option).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from cbir_pg.datasets.base import Adapter, Record, RowError, parse_age, parse_sex, read_csv, register_adapter
from cbir_pg.errors import ConfigError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm", ".gif", ".webp"}
SPLIT_NAMES = {
    "train": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "validate": "val",
    "test": "test",
}


def _compose(label: str, modality: str | None, region: str | None) -> str:
    label = label.strip()
    if label.count("/") == 2 or not (modality and region):
        return label
    return f"{modality.strip().upper()}/{region.strip()}/{label}"


@register_adapter("imagefolder")
class ImageFolderAdapter(Adapter):
    title = "image folder"
    options_help = {
        "modality": "modality code for every class, e.g. XR",
        "region": "anatomical region for every class, e.g. chest",
        "fractions": "train,val,test fractions for the seeded split (default 0.7,0.1,0.2)",
    }

    def __init__(self, root, key, options):
        super().__init__(root, key, options)
        if not self.root.is_dir():
            raise ConfigError(f"imagefolder: {self.root} is not a folder")
        self.fractions = self.fractions_option()

    @classmethod
    def default_key(cls, root, options):
        return cls.key_from_name(Path(root).name, "folder")

    def default_label(self, source_label: str) -> str | None:
        return super().default_label(
            _compose(source_label, self.options.get("modality"), self.options.get("region"))
        )

    def records(self) -> Iterator[Record | RowError]:
        subdirs = sorted(p for p in self.root.iterdir() if p.is_dir())
        split_layout = bool(subdirs) and all(p.name.lower() in SPLIT_NAMES for p in subdirs)
        groups = [(SPLIT_NAMES[d.name.lower()], d) for d in subdirs] if split_layout else [(None, self.root)]
        mod = (self.options.get("modality") or "").upper() or None
        for split, base in groups:
            for cls_dir in sorted(p for p in base.iterdir() if p.is_dir()):
                for f in sorted(cls_dir.rglob("*")):
                    if f.suffix.lower() not in IMAGE_SUFFIXES or f.is_dir():
                        continue
                    uri = f.relative_to(self.root).as_posix()
                    if not f.is_file():  # a FIFO, a device, a socket or a dangling symlink
                        yield RowError(uri, "not_a_regular_file", f"{uri}: not a regular file")
                        continue
                    yield Record(
                        uri=uri,
                        labels=[cls_dir.name],
                        split=split,
                        patient=uri,
                        modality=mod,
                        region=self.options.get("region"),
                    )


@register_adapter("csv")
class CSVManifestAdapter(Adapter):
    title = "CSV manifest"
    require_label = True
    options_help = {
        "images": "folder the paths are relative to (default: the manifest's folder)",
        "modality": "default modality when the manifest has no modality column",
        "region": "default region when the manifest has no region column",
        "fractions": "train,val,test fractions for rows without a split (default 0.7,0.1,0.2)",
    }

    def __init__(self, root, key, options):
        super().__init__(root, key, options)
        if not self.root.is_file():
            raise ConfigError(f"csv: ROOT must be a manifest CSV file, got {self.root}")
        self.fractions = self.fractions_option()

    @classmethod
    def default_key(cls, root, options):
        return cls.key_from_name(Path(root).stem, "manifest")

    def image_root(self) -> Path:
        return Path(self.options["images"]).expanduser() if self.options.get("images") else self.root.parent

    def records(self) -> Iterator[Record | RowError]:
        for line, row in read_csv(self.root, ("path", "label")):
            src = f"{self.root.name}:{line}"
            path = (row.get("path") or "").strip()
            labels = [x for x in (row.get("label") or "").split("|") if x.strip()]
            if not path or not labels:
                yield RowError(src, "malformed_row", "empty path or label")
                continue
            split_raw = (row.get("split") or "").strip().lower()
            if split_raw and split_raw not in SPLIT_NAMES:
                yield RowError(src, "malformed_row", f"split {split_raw!r} is not train, val or test")
                continue
            mod = (row.get("modality") or "").strip() or self.options.get("modality")
            region = (row.get("region") or "").strip() or self.options.get("region")
            age_raw = (row.get("age") or "").strip()
            age = parse_age(age_raw)
            if age_raw and age is None:
                yield RowError(src, "malformed_row", f"age {age_raw!r} is not a number of years")
                continue
            yield Record(
                uri=path,
                labels=[_compose(x, mod, region) for x in labels],
                split=SPLIT_NAMES.get(split_raw) if split_raw else None,
                patient=(row.get("patient") or "").strip() or path,
                sex=parse_sex(row.get("sex")),
                age=age,
                study=(row.get("study") or "").strip() or None,
                view=(row.get("view") or "").strip() or None,
                modality=mod.upper() if mod else None,
                region=region.lower() if region else None,
            )
