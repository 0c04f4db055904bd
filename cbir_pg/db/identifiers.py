"""The one module that builds SQL with identifiers chosen at run time (one embedding table per encoder).

Everything goes through :class:`psycopg.sql.Identifier`; names are also validated against a strict
pattern first, so a hostile model or dataset name is refused with a clear error before any SQL exists.
"""

from __future__ import annotations

import re

from psycopg import sql

from cbir_pg.errors import ConfigError

SCHEMA = "cbir"
KEY_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
#: pgvector's HNSW limit for ``vector`` is 2,000 dims; above that we store/index ``halfvec``.
MAX_VECTOR_INDEX_DIM = 2000


def check_key(key: str, what: str = "model") -> str:
    """Validate an encoder or dataset key: lowercase letters, digits and ``_``, starting with a letter."""
    if not isinstance(key, str) or not KEY_PATTERN.fullmatch(key):
        raise ConfigError(
            f"invalid {what} name {key!r}: use lowercase letters, digits and '_', starting with a letter"
            " (at most 40 characters, so index names fit PostgreSQL's 63-byte limit)"
        )
    return key


def vector_type_for(dim: int) -> str:
    return "vector" if dim <= MAX_VECTOR_INDEX_DIM else "halfvec"


def embedding_table_name(key: str) -> str:
    return f"embedding_{check_key(key)}"


def embedding_table(key: str) -> sql.Identifier:
    """``cbir.embedding_<key>``."""
    return sql.Identifier(SCHEMA, embedding_table_name(key))


def index_name(key: str, kind: str = "hnsw") -> str:
    check_key(kind, "index kind")
    return f"embedding_{check_key(key)}_{kind}_idx"


def index_identifier(key: str, kind: str = "hnsw") -> sql.Identifier:
    return sql.Identifier(SCHEMA, index_name(key, kind))


def staging_index_name(key: str, kind: str = "hnsw") -> str:
    """The name a rebuilt index has until it is swapped in: ``embedding_<key>_<kind>_new``."""
    return index_name(key, kind)[: -len("_idx")] + "_new"


def create_embedding_table(key: str, dim: int) -> sql.Composed:
    """DDL for a model's embedding table: ``image_id`` primary and foreign key, ``vector(dim)``
    (``halfvec`` above 2,000 dims) kept inline (``STORAGE PLAIN`` avoids TOAST: 3-5x faster exact scans)."""
    if not isinstance(dim, int) or dim < 1 or dim > 16000:
        raise ConfigError(f"invalid embedding dimension {dim!r}")
    vtype = vector_type_for(dim)
    table = embedding_table(key)
    stmts = [
        sql.SQL(
            "create table if not exists {table} ("
            " image_id bigint primary key references cbir.image(id) on delete cascade,"
            " embedding {vtype}({dim}) not null,"
            " created_at timestamptz not null default now())"
        ).format(table=table, vtype=sql.SQL(vtype), dim=sql.Literal(dim)),
    ]
    if vtype == "vector" and dim <= MAX_VECTOR_INDEX_DIM:
        stmts.append(
            sql.SQL("alter table {table} alter column embedding set storage plain").format(table=table)
        )
    stmts.append(sql.SQL("grant select, insert on {table} to cbir_worker").format(table=table))
    return sql.SQL("; ").join(stmts)


def drop_embedding_table(key: str) -> sql.Composed:
    return sql.SQL("drop table if exists {table} cascade").format(table=embedding_table(key))
