"""Where the demo's real images come from: a folder the user gives (``--data-dir`` or
``CBIR_PG_DATA_DIR``), else MedMNIST's official files (Zenodo, MD5-checked) cached under
``$CBIR_PG_HOME/cache/medmnist``. Offline with no files, one clear error says how to provide them.
"""

from __future__ import annotations

import hashlib
import os
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from cbir_pg.config import Settings
from cbir_pg.errors import ConfigError


@dataclass(frozen=True)
class MedMnistFile:
    flag: str
    candidates: tuple[str, ...]  # file names accepted in a data folder, in order of preference
    url: str
    md5: str


# The official MedMNIST v2/v3 release (Yang et al., Scientific Data 2023), CC BY 4.0.
DEMO_FILES = (
    MedMnistFile(
        "breastmnist",
        ("breastmnist.npz",),
        "https://zenodo.org/records/10519652/files/breastmnist.npz?download=1",
        "750601b1f35ba3300ea97c75c52ff8f6",
    ),
    MedMnistFile(
        "pneumoniamnist",
        ("pneumoniamnist_subset.npz", "pneumoniamnist.npz"),
        "https://zenodo.org/records/10519652/files/pneumoniamnist.npz?download=1",
        "28209eda62fecd6e6a2d98b1501bb15f",
    ),
)

HOW_TO = (
    "put breastmnist.npz and pneumoniamnist.npz (or pneumoniamnist_subset.npz) from MedMNIST "
    "(https://zenodo.org/records/10519652) in a folder and pass --data-dir DIR or set CBIR_PG_DATA_DIR"
)


def _md5(path: Path) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def offline() -> bool:
    return any(os.environ.get(v, "") not in ("", "0") for v in ("CBIR_PG_OFFLINE", "HF_HUB_OFFLINE"))


def _download(spec: MedMnistFile, dest: Path, timeout: float = 30.0) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(".part")
    try:
        with urllib.request.urlopen(spec.url, timeout=timeout) as resp, open(tmp, "wb") as fh:
            while chunk := resp.read(1 << 20):
                fh.write(chunk)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ConfigError(f"cannot download {spec.flag} from {spec.url} ({exc}); {HOW_TO}") from None
    if _md5(tmp) != spec.md5:
        tmp.unlink(missing_ok=True)
        raise ConfigError(f"{spec.flag}: downloaded file fails its MD5 check; {HOW_TO}")
    tmp.replace(dest)
    return dest


def resolve_demo_files(settings: Settings, data_dir: Path | None = None) -> dict[str, Path]:
    """``{flag: path}`` for BreastMNIST and PneumoniaMNIST, from the data folder, the cache or Zenodo."""
    folder = data_dir or settings.data_dir
    if folder is not None and not Path(folder).is_dir():
        raise ConfigError(f"data folder {folder} does not exist; {HOW_TO}")
    cache = settings.cache_dir / "medmnist"
    found: dict[str, Path] = {}
    for spec in DEMO_FILES:
        for base in [p for p in (folder, cache) if p is not None]:
            hit = next((Path(base) / n for n in spec.candidates if (Path(base) / n).is_file()), None)
            if hit is not None:
                found[spec.flag] = hit
                break
        if spec.flag in found:
            continue
        if folder is not None or offline():
            where = f"in {folder}" if folder is not None else "locally (offline: not downloading)"
            raise ConfigError(f"no {spec.flag} file {where}; {HOW_TO}")
        found[spec.flag] = _download(spec, cache / spec.candidates[-1])
    return found
