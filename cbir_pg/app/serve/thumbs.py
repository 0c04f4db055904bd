"""Content-addressed PNG cache for thumbnails and full-size views, under ``$CBIR_PG_HOME/cache/serve``.

The key is the image's ``content_hash`` (sha256 of its decoded pixels, recorded at import) or, where an
import recorded none, the sha256 of the file's bytes; plus the rendition (``t160``, ``full1024``) and a
version. Identical images share one entry, an entry is written once (atomically: a temporary file, then
``os.replace``) and its key is the HTTP ETag, so a browser revalidates with one cheap 304.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
from pathlib import Path

import numpy as np

from cbir_pg.errors import NotFoundError

VERSION = "v1"
THUMB_SIDE = 160
FULL_SIDE = 1024


def render_png(rgb: np.ndarray, side: int) -> bytes:
    """PNG of ``rgb`` scaled down (aspect kept) to fit ``side`` x ``side``; never scaled up."""
    from PIL import Image

    im = Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8)).convert("RGB")
    if max(im.size) > side:
        im.thumbnail((side, side), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    im.save(buf, format="PNG", optimize=False)
    return buf.getvalue()


class PngCache:
    def __init__(self, root: Path):
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.png"

    def get(self, source: Path, content_hash: str | None, rendition: str, side: int) -> tuple[bytes, str]:
        """``(png bytes, etag)`` of ``source`` rendered at ``side``, from the cache or made once."""
        from cbir_pg.images import DecodeError, decode_bytes

        data = None
        if not content_hash:
            data = self._read(source)
            content_hash = hashlib.sha256(data).hexdigest()
        key = f"{content_hash[:40]}-{rendition}-{VERSION}"
        path = self._path(key)
        try:
            return path.read_bytes(), key
        except OSError:
            pass
        if data is None:
            data = self._read(source)
        try:
            rgb = decode_bytes(data, "the stored image")
        except DecodeError as exc:
            raise NotFoundError(f"the stored image cannot be shown: {exc.reason}") from None
        png = render_png(rgb, side)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(png)
            os.replace(tmp, path)
        except OSError:
            Path(tmp).unlink(missing_ok=True)  # a read-only cache still serves, it just does not keep
        return png, key

    @staticmethod
    def _read(source: Path) -> bytes:
        try:
            return source.read_bytes()
        except (OSError, ValueError):
            # the message names no path: it could reach a client
            raise NotFoundError("the stored image's file cannot be read") from None
