"""Content-addressed PNG cache for thumbnails and full-size views, under ``$CBIR_PG_HOME/cache/serve``.

The key is the sha256 of the decoded pixels that were read and verified (equal to the image's
``content_hash`` recorded at import, which the file must match; an import that recorded none is decoded
on every miss and keyed by what was decoded); plus the rendition (``t160``, ``full1024``) and a
version. Identical images share one entry, an entry is written once (atomically: a temporary file, then
``os.replace``) and its key is the HTTP ETag, so a browser revalidates with one cheap 304.
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

import numpy as np

from cbir_pg.errors import NotFoundError

VERSION = "v2"  # v2: keyed by verified pixels
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
        """``(png bytes, etag)`` of ``source`` rendered at ``side``, from the cache or made once.

        The file is read only through the guarded reader (:func:`cbir_pg.images.read_image`: regular
        files only, bounded size and decode, pixels checked against the recorded ``content_hash``), and
        an entry is keyed by the hash of the pixels that were verified: a file replaced after import is
        refused, never rendered as the case nor cached under the case's hash."""
        from cbir_pg.images import DecodeError, read_image

        if content_hash:  # an entry under the recorded hash holds exactly the pixels verified against it
            key = self._key(content_hash, rendition)
            try:
                return self._path(key).read_bytes(), key
            except OSError:
                pass
        try:
            rgb, verified = read_image(source, content_hash, "the stored image")
        except DecodeError as exc:
            # the message names no path: it could reach a client
            if exc.reason in ("missing_file", "unreadable_file", "bad_path"):
                raise NotFoundError("the stored image's file cannot be read") from None
            raise NotFoundError(f"the stored image cannot be shown: {exc.reason}") from None
        key = self._key(verified, rendition)
        path = self._path(key)
        try:
            return path.read_bytes(), key
        except OSError:
            pass
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
    def _key(pixel_hash: str, rendition: str) -> str:
        return f"{pixel_hash[:40]}-{rendition}-{VERSION}"
