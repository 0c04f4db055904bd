"""The managed image store: image files the project writes itself, named by their pixel hash.

Adapters that materialise images (MedMNIST ``.npz`` arrays → PNG; DICOM folders imported with
``--managed-copy``) write each image once as a lossless PNG whose file name carries the sha256 of its
decoded pixels (:func:`cbir_pg.images.pixel_hash`, the ``cbir.image.content_hash`` of the row):

* two imports that hold different pixels can never share a file, even under the same dataset key in two
  databases sharing one ``CBIR_PG_HOME`` (the first round skipped any existing path, so a second
  database's rows pointed at the first one's pixels);
* a file that exists under a name is reused only because the name says its pixels are the same;
* ingest decodes each file and refuses (a recorded ``pixel_hash_mismatch`` failure, never a vector) one
  whose pixels do not hash to the row's ``content_hash``, whoever replaced it.

Files are written to a temporary name in the same folder and renamed into place, so a reader never sees
half a file and two writers of the same image leave one complete file.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import numpy as np


def managed_name(stem: str, content_hash: str) -> str:
    """``<stem>.<sha256>.png``: the relative path (``cbir.image.uri``) of a managed image."""
    if len(content_hash) != 64 or any(c not in "0123456789abcdef" for c in content_hash):
        raise ValueError(f"not a sha256 hex digest: {content_hash!r}")
    return f"{stem}.{content_hash}.png"


def write_png(path: Path, pixels: np.ndarray) -> None:
    """Write ``pixels`` (``uint8``, 2-D greyscale or RGB) as a PNG at ``path`` unless it exists (its name
    holds the pixel hash, so an existing file of that name is the same image); atomic rename."""
    if path.is_file():
        return
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        Image.fromarray(np.ascontiguousarray(pixels)).save(tmp, format="PNG")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
