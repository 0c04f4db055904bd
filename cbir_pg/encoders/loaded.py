"""Encoders kept in memory between queries.

Building an encoder (importing torch and the model family's library, reading the weights) takes seconds;
embedding one image takes milliseconds. A process that embeds query after query (``cbir-pg serve``'s
uploads, a Python session calling :func:`cbir_pg.search.search` with files) therefore builds each
encoder once: :func:`loaded_encoder` returns the one already built for the same key, weights and
device, and logs one ``INFO`` line on the ``cbir_pg.encoders`` logger when it builds one. At most
:data:`MAX_LOADED` encoders stay loaded (the least recently used goes first); :func:`forget_encoders`
frees them all.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict

from cbir_pg.encoders.base import Encoder, create_encoder

log = logging.getLogger("cbir_pg.encoders")

#: how many encoders one process keeps built (each holds its weights in memory)
MAX_LOADED = 2

_lock = threading.Lock()
_loaded: OrderedDict[tuple[str, bool, int, str], Encoder] = OrderedDict()


def loaded_encoder(key: str, *, pretrained: bool = True, seed: int = 0, device: str = "cpu") -> Encoder:
    """The encoder ``key`` (as :func:`create_encoder` builds it), built on first use and kept.

    Thread-safe: concurrent first calls build it once (the lock is held while building)."""
    cache_key = (key, pretrained, seed if not pretrained else 0, device)
    with _lock:
        enc = _loaded.get(cache_key)
        if enc is not None:
            _loaded.move_to_end(cache_key)
            return enc
        t0 = time.perf_counter()
        enc = create_encoder(key, pretrained=pretrained, seed=seed, device=device)
        log.info(
            "loaded encoder %s (config %s) on %s in %.1f s",
            key,
            enc.config.config_hash()[:12],
            device,
            time.perf_counter() - t0,
        )
        _loaded[cache_key] = enc
        while len(_loaded) > MAX_LOADED:
            _loaded.popitem(last=False)
        return enc


def loaded_keys() -> list[str]:
    """Keys of the encoders built and kept, least recently used first."""
    with _lock:
        return [k[0] for k in _loaded]


def forget_encoders() -> None:
    """Drop every kept encoder (their memory is freed when nothing else holds them)."""
    with _lock:
        _loaded.clear()
