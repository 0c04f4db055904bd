"""Login roles for people and BI tools: ``cbir-pg db roles add NAME --reader|--worker``.

A new role gets a generated password, printed once by the CLI and never stored in clear: the client
computes the SCRAM-SHA-256 verifier (libpq's ``PQencryptPasswordConn``, what psql's ``\\password`` does),
so neither the statement nor the server log holds the password. A reader also gets the limits of
``cbir.reader_limits_v1()`` (connection limit, statement timeout, temp-file limit), applied by
``cbir.apply_reader_limits`` in ``sql/schema/90_roles.sql``.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from cbir_pg.db import identifiers, queries
from cbir_pg.db.database import Database, scalar
from cbir_pg.errors import ConfigError, NotFoundError

#: ``--reader`` / ``--worker`` → the group role a login joins
GROUPS = {"reader": "cbir_reader", "worker": "cbir_worker"}


@dataclass(frozen=True)
class NewRole:
    name: str
    kind: str
    group: str
    password: str
    limits: dict[str, str]


@dataclass(frozen=True)
class LoginRole:
    name: str
    kind: str
    connection_limit: int


def _require_schema(conn: psycopg.Connection) -> None:
    if not scalar(conn, queries.get("roles", "schema_ready")):
        raise ConfigError("the database has no cbir roles yet: run `cbir-pg db migrate` first")


def add_role(conn: psycopg.Connection, name: str, kind: str) -> NewRole:
    """Create login role ``name`` in the group of ``kind`` (``reader`` or ``worker``) with a generated
    password; returns it (the only time it exists in clear). ``conn`` should be in autocommit mode or
    committed by the caller (``Database.connection()`` does)."""
    identifiers.check_role_name(name)
    if kind not in GROUPS:
        raise ConfigError(f"unknown role kind {kind!r}: use one of {', '.join(GROUPS)}")
    _require_schema(conn)
    if scalar(conn, queries.get("roles", "role_exists"), {"name": name}):
        raise ConfigError(f"role {name!r} already exists (drop it first: cbir-pg db roles drop {name})")
    password = secrets.token_urlsafe(24)
    verifier = conn.pgconn.encrypt_password(password.encode(), name.encode(), b"scram-sha-256").decode()
    conn.execute(
        queries.get(
            "roles",
            "create_login",
            role=identifiers.role(name),
            verifier=sql.Literal(verifier),
            member_of=sql.Identifier(GROUPS[kind]),
        )
    )
    limits: dict[str, str] = {}
    if kind == "reader":
        conn.execute(queries.get("roles", "apply_reader_limits"), {"name": name})
        conn.execute(queries.get("roles", "grant_login_to_web"), {"name": name})
        with conn.cursor(row_factory=dict_row) as cur:
            rows = cur.execute(queries.get("roles", "reader_limits")).fetchall()
        limits = {r["setting"]: r["value"] for r in rows}
    else:
        conn.execute(queries.get("roles", "apply_worker_attributes"), {"name": name})
    return NewRole(name, kind, GROUPS[kind], password, limits)


def drop_role(conn: psycopg.Connection, name: str) -> None:
    """Drop login role ``name`` (and what it owns or was granted in this database)."""
    identifiers.check_role_name(name)
    if not scalar(conn, queries.get("roles", "role_exists"), {"name": name}):
        raise NotFoundError(f"no role {name!r}")
    conn.execute(queries.get("roles", "forget_grants"), {"name": name})
    conn.execute(queries.get("roles", "drop_owned", role=identifiers.role(name)))
    conn.execute(queries.get("roles", "drop_role", role=identifiers.role(name)))


@dataclass(frozen=True)
class DatasetGrant:
    dataset: str
    role: str
    granted_at: Any


def _dataset_id(conn: psycopg.Connection, dataset: str) -> int:
    identifiers.check_key(dataset, "dataset")
    found = scalar(conn, queries.get("roles", "dataset_id"), {"dataset": dataset})
    if found is None:
        raise NotFoundError(f"no dataset {dataset!r} (see `cbir-pg datasets list`)")
    return found


def _grantee(conn: psycopg.Connection, name: str) -> str:
    if name != "cbir_reader":
        identifiers.check_role_name(name)
    if not scalar(conn, queries.get("roles", "role_exists"), {"name": name}):
        raise NotFoundError(f"no role {name!r}")
    return name


def grant_dataset(conn: psycopg.Connection, name: str, dataset: str) -> bool:
    """Let role ``name`` (and every role with its privileges; ``cbir_reader``: every reader) see
    ``dataset``: its images, patients' sex and age, labels and neighbours, in psql and the page
    (row-level security, ``sql/schema/92_access.sql``). Returns whether the grant is new."""
    _require_schema(conn)
    _grantee(conn, name)
    ds = _dataset_id(conn, dataset)
    return conn.execute(queries.get("roles", "grant_dataset"), {"dataset_id": ds, "name": name}).rowcount == 1


def revoke_dataset(conn: psycopg.Connection, name: str, dataset: str) -> bool:
    """Withdraw a :func:`grant_dataset`; returns whether there was one. Takes effect on the next query
    (a logged-in person's next page shows the dataset no more)."""
    _require_schema(conn)
    if name != "cbir_reader":
        identifiers.check_role_name(name)
    ds = _dataset_id(conn, dataset)
    return (
        conn.execute(queries.get("roles", "revoke_dataset"), {"dataset_id": ds, "name": name}).rowcount == 1
    )


def list_dataset_grants(conn: psycopg.Connection) -> list[DatasetGrant]:
    from psycopg.rows import class_row

    with conn.cursor(row_factory=class_row(DatasetGrant)) as cur:
        return cur.execute(queries.get("roles", "dataset_grants")).fetchall()


def list_roles(conn: psycopg.Connection) -> list[LoginRole]:
    from psycopg.rows import class_row

    with conn.cursor(row_factory=class_row(LoginRole)) as cur:
        return cur.execute(queries.get("roles", "list")).fetchall()


def login_dsn(db: Database, user: str, password: str, tcp: tuple[str, int] | None = None) -> str:
    """A URI for ``user`` on the server and database of ``db`` (over ``tcp`` when given)."""
    from psycopg.conninfo import conninfo_to_dict

    params = conninfo_to_dict(db.dsn)
    db = quote(str(params.get("dbname") or "cbir"), safe="")
    auth = f"{quote(user, safe='')}:{quote(password, safe='')}"
    if tcp:
        host = f"[{tcp[0]}]" if ":" in tcp[0] else tcp[0]
        return f"postgresql://{auth}@{host}:{tcp[1]}/{db}"
    host = str(params.get("host") or "")
    port = str(params.get("port") or "5432")
    if not host or host.startswith("/"):
        query = f"?host={quote(host, safe='/')}&port={port}" if host else f"?port={port}"
        return f"postgresql://{auth}@/{db}{query}"
    return f"postgresql://{auth}@{host}:{port}/{db}"
