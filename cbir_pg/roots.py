"""Where a dataset's files are on *this* machine: stored roots remapped by ``CBIR_PG_DATA_ROOT``.

``cbir.dataset.root`` holds the absolute folder the dataset was imported from, on the machine that
imported it. A container or another host sees the same files under another path (the compose worker
mounts them at ``/data``). ``CBIR_PG_DATA_ROOT`` maps stored roots to local ones, as ``OLD=NEW`` pairs
separated by ``;``; the longest matching ``OLD`` prefix wins, and a root no pair matches is used as
stored::

    CBIR_PG_DATA_ROOT="/home/me/datasets=/data"                  # /home/me/datasets/nih14 -> /data/nih14
    CBIR_PG_DATA_ROOT="/srv/a=/mnt/a;/srv/b/chexpert=/mnt/chexpert"

Every reader of image files (the ingest workers, search, the report's grids) goes through
:func:`local_root`, so the database never has to change when the files move.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import PurePosixPath

from cbir_pg.errors import ConfigError

ENV = "CBIR_PG_DATA_ROOT"


@lru_cache(maxsize=8)
def parse_mapping(text: str) -> tuple[tuple[str, str], ...]:
    """``"OLD=NEW;OLD2=NEW2"`` → pairs, longest ``OLD`` first; a malformed pair is a one-line error."""
    pairs = []
    for part in (p.strip() for p in text.split(";")):
        if not part:
            continue
        old, sep, new = part.partition("=")
        old, new = old.strip().rstrip("/"), new.strip().rstrip("/")
        if not sep or not old or not new:
            raise ConfigError(f"{ENV}: expected OLD=NEW pairs separated by ';', got {part!r}")
        pairs.append((old, new))
    return tuple(sorted(pairs, key=lambda p: -len(p[0])))


def local_root(root: str | None) -> str | None:
    """``root`` as this machine sees it (see the module docstring)."""
    if not root:
        return root
    text = os.environ.get(ENV, "")
    if not text.strip():
        return root
    for old, new in parse_mapping(text):
        if root == old or root.startswith(old + "/"):
            rest = root[len(old) :].lstrip("/")
            return str(PurePosixPath(new) / rest) if rest else new
    return root
