"""MedMNIST ``.npz`` files (Yang et al., MedMNIST v2, CC BY 4.0).

ROOT is the ``.npz`` file (arrays ``{train,val,test}_{images,labels}``); ``flag`` names the
MedMNIST dataset (``breastmnist``, ``pneumoniamnist``, ...; default: guessed from the file name).
Each image is written once as a PNG ``<image root>/<dataset key>/<split>/<index>.<pixel sha256>.png``
(``CBIR_PG_HOME/images``; the managed store, :mod:`cbir_pg.datasets.store`: the pixel hash names the
file, so another ``.npz`` imported under the same key never reuses these files), and
``<image root>/<dataset key>`` becomes ``cbir.dataset.root``. The official splits are kept.
MedMNIST has no patient ids: every image is its own patient (key ``<split>/<index>``).

Source labels are MedMNIST's own class names; the default harmonisation is

=============== ================= =========================================
flag            class names       harmonised
=============== ================= =========================================
breastmnist     malignant         ``US/breast/malignant``
breastmnist     normal, benign    ``US/breast/benign_or_normal`` (one class: normal *or benign*)
pneumoniamnist  normal            ``XR/chest/normal``
pneumoniamnist  pneumonia         ``XR/chest/pneumonia``
=============== ================= =========================================
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cbir_pg.datasets.base import Adapter, Record, RowError, UnknownLabel, register_adapter
from cbir_pg.datasets.store import managed_name, write_png
from cbir_pg.errors import ConfigError

#: flag → (modality, region, class names by index, {class name: harmonised finding})
FLAGS: dict[str, tuple[str, str, list[str], dict[str, str]]] = {
    "breastmnist": (
        "US",
        "breast",
        ["malignant", "normal, benign"],
        {"malignant": "malignant", "normal, benign": "benign_or_normal"},
    ),
    "pneumoniamnist": (
        "XR",
        "chest",
        ["normal", "pneumonia"],
        {"normal": "normal", "pneumonia": "pneumonia"},
    ),
    "chestmnist": (
        "XR",
        "chest",
        [
            "atelectasis",
            "cardiomegaly",
            "effusion",
            "infiltration",
            "mass",
            "nodule",
            "pneumonia",
            "pneumothorax",
            "consolidation",
            "edema",
            "emphysema",
            "fibrosis",
            "pleural",
            "hernia",
        ],
        {"effusion": "pleural_effusion", "pleural": "pleural_thickening"},
    ),
    "organamnist": (
        "CT",
        "abdomen",
        [
            "bladder",
            "femur-left",
            "femur-right",
            "heart",
            "kidney-left",
            "kidney-right",
            "liver",
            "lung-left",
            "lung-right",
            "pancreas",
            "spleen",
        ],
        {},
    ),
}


@register_adapter("medmnist")
class MedMNISTAdapter(Adapter):
    title = "MedMNIST v2"
    source_url = "https://medmnist.com/"
    licence = "CC BY 4.0"
    citation = "Yang et al., MedMNIST v2, Scientific Data 10, 41 (2023)"
    #: a 64-bit pHash of a 28x28 thumbnail collides for images that only look alike (it flagged 36
    #: distinct BreastMNIST images): exact duplicates only, the official splits are already curated.
    near_dedupe = False
    options_help = {
        "flag": "MedMNIST dataset name, e.g. breastmnist, pneumoniamnist (default: from the file name)"
    }

    def __init__(self, root: Path, key: str, options: dict[str, Any]):
        super().__init__(root, key, options)
        if not self.root.is_file():
            raise ConfigError(f"medmnist: ROOT must be a MedMNIST .npz file, got {self.root}")
        self.flag = self.resolve_flag(self.root, self.options)
        self.modality, self.region, self.classes, self.rename = FLAGS[self.flag]
        self.single_label_source = self.flag != "chestmnist"

    @staticmethod
    def resolve_flag(root: Path, options: dict[str, Any]) -> str:
        flag = options.get("flag")
        if not flag:
            stem = Path(root).name.lower()
            flag = next((f for f in sorted(FLAGS, key=len, reverse=True) if stem.startswith(f)), None)
            if flag is None:
                raise ConfigError(
                    f"medmnist: cannot tell the flag from {Path(root).name}; pass --flag (one of {', '.join(FLAGS)})"
                )
        flag = str(flag).lower()
        if flag not in FLAGS:
            raise ConfigError(f"medmnist: unknown flag {flag!r}; known: {', '.join(FLAGS)}")
        return flag

    @classmethod
    def default_key(cls, root: Path, options: dict[str, Any]) -> str:
        return cls.resolve_flag(root, options)

    def image_root(self) -> Path:
        from cbir_pg.config import get_settings

        return get_settings().image_root / self.key

    def _arrays(self):
        import numpy as np

        from cbir_pg.images import stat_regular_file

        stat_regular_file(self.root)
        try:
            data = np.load(self.root)
            return _checked(self.root, {k: data[k] for k in data.files})
        except ConfigError:
            raise
        except Exception as exc:  # zipfile / pickle / format errors
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ConfigError(f"medmnist: cannot read {self.root}: {first}") from None

    def total(self) -> int | None:
        data = self._arrays()
        return sum(
            int(data[f"{s}_labels"].shape[0]) for s in ("train", "val", "test") if f"{s}_labels" in data
        )

    def default_label(self, source_label: str) -> str | None:
        if source_label not in self.classes:
            raise UnknownLabel(f"{source_label!r} is not a {self.flag} class")
        finding = self.rename.get(source_label, source_label)
        return f"{self.modality}/{self.region}/{finding}"

    def records(self) -> Iterator[Record | RowError]:
        import numpy as np

        from cbir_pg.images import pixel_hash

        data = self._arrays()
        out_dir = self.image_root()
        for split in ("train", "val", "test"):
            if f"{split}_images" not in data:
                continue
            images, labels = data[f"{split}_images"], data[f"{split}_labels"]
            labels = labels.reshape(labels.shape[0], -1)
            for i in range(images.shape[0]):
                img = images[i]
                if img.ndim == 3 and img.shape[2] == 1:
                    img = img[:, :, 0]
                rgb = (
                    np.repeat(img[:, :, None], 3, axis=2)
                    if img.ndim == 2
                    else np.ascontiguousarray(img[:, :, :3])
                )
                row = labels[i]
                if self.single_label_source:
                    idx = int(row[0])
                    if not 0 <= idx < len(self.classes):
                        yield RowError(
                            f"{self.root.name}:{split}[{i}]",
                            "unknown_label",
                            f"class index {idx} out of range",
                        )
                        continue
                    names = [self.classes[idx]]
                else:
                    names = [self.classes[j] for j in np.flatnonzero(row)]
                uri = managed_name(f"{split}/{i:06d}", pixel_hash(rgb))
                yield Record(
                    uri=uri,
                    labels=names,
                    split=split,
                    patient=f"{split}/{i}",
                    modality=self.modality,
                    region=self.region,
                    extra={"npz": self.root.name, "index": i},
                    pixels=rgb,
                    write=_png_writer(out_dir / uri, img),
                )


def _checked(path: Path, data: dict[str, Any]) -> dict[str, Any]:
    """The arrays of a MedMNIST file, or one clear :class:`ConfigError` saying what is wrong with them:
    ``{split}_images`` (uint8, ``(n, h, w)`` or ``(n, h, w, 1|3)``, h and w >= 4) with ``{split}_labels``
    (integers, ``(n,)`` or ``(n, k)``, the same n), for at least one of train, val, test."""
    import numpy as np

    where = f"medmnist: {path.name}"
    found = [s for s in ("train", "val", "test") if f"{s}_images" in data or f"{s}_labels" in data]
    if not found:
        raise ConfigError(
            f"{where}: no train/val/test arrays (has: {', '.join(sorted(data)) or 'nothing'});"
            " expected train_images and train_labels, ..."
        )
    for split in found:
        ik, lk = f"{split}_images", f"{split}_labels"
        missing = [k for k in (ik, lk) if k not in data]
        if missing:
            raise ConfigError(f"{where}: {missing[0]} is missing (it has {ik if ik in data else lk})")
        images, labels = data[ik], data[lk]
        if images.dtype != np.uint8:
            raise ConfigError(f"{where}: {ik} has dtype {images.dtype}, expected uint8")
        shape_ok = images.ndim == 3 or (images.ndim == 4 and images.shape[3] in (1, 3))
        if not shape_ok or images.shape[1] < 4 or images.shape[2] < 4:
            raise ConfigError(
                f"{where}: {ik} has shape {images.shape}, expected (n, h, w) or (n, h, w, 1|3), h, w >= 4"
            )
        if not np.issubdtype(labels.dtype, np.integer) and labels.dtype != np.bool_:
            raise ConfigError(f"{where}: {lk} has dtype {labels.dtype}, expected integers")
        if (
            labels.ndim not in (1, 2)
            or labels.shape[0] != images.shape[0]
            or labels.size == 0
            and len(images)
        ):
            raise ConfigError(
                f"{where}: {lk} has shape {labels.shape}, expected ({images.shape[0]},) or ({images.shape[0]}, k)"
            )
    return data


def _png_writer(path: Path, img):
    def write() -> None:
        write_png(path, img)

    return write
