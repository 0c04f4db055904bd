"""The one module that builds SQL with identifiers chosen at run time (one embedding table per encoder).

Everything goes through :class:`psycopg.sql.Identifier`; names are also validated against a strict
pattern first, so a hostile model or dataset name is refused with a clear error before any SQL exists.
"""

from __future__ import annotations

import re

from psycopg import sql

from cbir_pg.errors import ConfigError
from cbir_pg.rules import INDEX_NAME, MAX_VECTOR_INDEX_DIM

SCHEMA = "cbir"
KEY_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
__all__ = ["MAX_VECTOR_INDEX_DIM", "SCHEMA", "KEY_PATTERN"]  # the limit itself lives in cbir_pg.rules


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
    return INDEX_NAME.format(key=check_key(key), kind=kind)


def index_identifier(key: str, kind: str = "hnsw") -> sql.Identifier:
    return sql.Identifier(SCHEMA, index_name(key, kind))


def staging_index_name(key: str, kind: str = "hnsw") -> str:
    """The name a rebuilt index has until it is swapped in: ``embedding_<key>_<kind>_new``."""
    return index_name(key, kind)[: -len("_idx")] + "_new"


def create_embedding_table(key: str, dim: int) -> sql.Composed:
    """The statement that creates a model's embedding table: a call of the SQL function
    ``cbir.create_embedding_table`` (``sql/schema/15_models.sql``, the one home of per-model DDL and its
    GRANT): ``image_id`` primary and foreign key, ``vector(dim)`` (``halfvec`` above 2,000 dims)."""
    if not isinstance(dim, int) or isinstance(dim, bool) or dim < 1 or dim > 16000:
        raise ConfigError(f"invalid embedding dimension {dim!r}")
    return sql.SQL("select cbir.create_embedding_table({}, {})").format(
        sql.Literal(check_key(key)), sql.Literal(dim)
    )


def drop_embedding_table(key: str) -> sql.Composed:
    """The statement that drops a model's embedding table and its indexes (``cbir.drop_embedding_table``)."""
    return sql.SQL("select cbir.drop_embedding_table({})").format(sql.Literal(check_key(key)))


#: login role names cbir-pg creates: lowercase, not a reserved or predefined name
ROLE_PATTERN = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
RESERVED_ROLES = frozenset(
    {"postgres", "public", "cbir_reader", "cbir_worker", "none", "current_user", "session_user"}
)


def check_role_name(name: str) -> str:
    """Validate a login role name for ``cbir-pg db roles``."""
    if (
        not isinstance(name, str)
        or not ROLE_PATTERN.fullmatch(name)
        or name.startswith("pg_")
        or name in RESERVED_ROLES
    ):
        raise ConfigError(
            f"invalid role name {name!r}: use lowercase letters, digits and '_' (at most 63), not"
            " starting with 'pg_' and not postgres, public, cbir_reader or cbir_worker"
        )
    return name


def role(name: str) -> sql.Identifier:
    return sql.Identifier(check_role_name(name))
