"""Uploaded query images kept for the browser session, so that a new filter, model or k re-runs the same
upload instead of silently showing the old results (issue 26, item 4).

Only the decoded pixels and the vectors computed from them are kept, in this process's memory, under an
unguessable token that the page carries in its form and links, for the user who uploaded it only; never
on disk, never in the database. The
store is small and forgets: at most :data:`MAX_UPLOADS` uploads, each for :data:`TTL_S` seconds after its
last use. A forgotten token is one clear message ("upload it again").
"""

from __future__ import annotations

import re
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from cbir_pg.errors import ConfigError, NotFoundError

MAX_UPLOADS = 64
TTL_S = 3600.0
TOKEN = re.compile(r"[A-Za-z0-9_-]{20,64}")


@dataclass
class Upload:
    """One uploaded query: its pixels, the stored image with the same pixels (if any), vectors per model."""

    rgb: Any
    thumb_png: bytes
    #: the user who uploaded it (:attr:`cbir_pg.app.serve.auth.Actor.name`): nobody else gets it back
    owner: str | None = None
    vectors: dict[str, Any] = field(default_factory=dict)
    #: (model, role the lookup ran as) → the stored image with the same pixels, if that role sees one
    stored_image_ids: dict[tuple[str, str | None], int | None] = field(default_factory=dict)
    used: float = field(default_factory=time.monotonic)


class UploadStore:
    """Tokens to uploads, least recently used first out; thread-safe."""

    def __init__(self, max_uploads: int = MAX_UPLOADS, ttl_s: float = TTL_S):
        self._items: OrderedDict[str, Upload] = OrderedDict()
        self._lock = threading.Lock()
        self._max, self._ttl = max_uploads, ttl_s

    def put(self, upload: Upload) -> str:
        token = secrets.token_urlsafe(24)
        with self._lock:
            self._expire()
            self._items[token] = upload
            while len(self._items) > self._max:
                self._items.popitem(last=False)
        return token

    def get(self, token: str, owner: str | None = None) -> Upload:
        """The upload kept under ``token`` for ``owner`` (another user's token is as unknown as a
        forgotten one)."""
        if not isinstance(token, str) or not TOKEN.fullmatch(token):
            raise ConfigError("invalid upload reference")
        with self._lock:
            self._expire()
            item = self._items.get(token)
            if item is None or item.owner != owner:
                raise NotFoundError("the uploaded image is no longer kept on the server: upload it again")
            item.used = time.monotonic()
            self._items.move_to_end(token)
            return item

    def __len__(self) -> int:
        return len(self._items)

    def _expire(self) -> None:
        now = time.monotonic()
        for token in [t for t, u in self._items.items() if now - u.used > self._ttl]:
            del self._items[token]
