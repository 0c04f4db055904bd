"""Named queries, kept in ``sql/queries/<group>.sql`` under ``-- name: <query>`` headers.

Each file is read once (through :mod:`importlib.resources` where installed). A query may hold
``{placeholders}`` for run-time identifiers; :func:`get` fills them with :mod:`psycopg.sql`
objects (see :mod:`cbir_pg.db.identifiers`), never with strings.
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any

from psycopg import sql

from cbir_pg.resources import sql_dir

_HEADER = re.compile(r"^--\s*name:\s*([a-z_][a-z0-9_]*)\s*$", re.MULTILINE)


def parse(text: str) -> dict[str, str]:
    """Split a file into ``{name: query}`` by its ``-- name: x`` headers."""
    parts = _HEADER.split(text)
    out: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in out:
            raise ValueError(f"duplicate query name {name!r}")
        out[name] = body.strip().rstrip(";").strip()
    return out


@cache
def load(group: str) -> dict[str, str]:
    path = sql_dir() / "queries" / f"{group}.sql"
    return parse(path.read_text(encoding="utf-8"))


def get(group: str, name: str, **identifiers: Any) -> sql.Composed | sql.SQL:
    """The query ``name`` of ``sql/queries/<group>.sql``, with identifiers filled in safely."""
    queries = load(group)
    if name not in queries:
        raise KeyError(f"no query {name!r} in sql/queries/{group}.sql")
    q = sql.SQL(queries[name])  # type: ignore[arg-type]
    return q.format(**identifiers) if identifiers else q
