"""The read-only login that user SQL runs as (``cbir_pg.connect().sql(...)``, docs/python-api.md).

A query typed into a notebook must not run as the owner: as the superuser it could commit DDL or run
``COPY ... TO PROGRAM`` (a shell as the server's OS user). ``SET ROLE`` inside the owner's session is no
guard (the statement itself can ``RESET ROLE``), so the query runs on a separate connection that logs in
as ``cbir_analyst`` (``sql/schema/92_analyst.sql``: SELECT on the cbir and cbir_report schemas, nothing
else), inside a read-only transaction, one statement per call.

The owner's connection is used once per client to give the role LOGIN, its password and SELECT on
the tables created since the last migrate (new embedding tables). The password is generated once and
kept in ``$CBIR_PG_HOME/analyst-password`` (mode 0600). A session that is itself unprivileged (a
reader's own DSN) runs the query as itself, in the same read-only transaction.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from psycopg import sql

from cbir_pg.db import queries
from cbir_pg.db.connect import login_dsn, translate
from cbir_pg.db.database import Database, scalar
from cbir_pg.errors import ConfigError, DatabaseError

ROLE = "cbir_analyst"


def stored_password(path: Path) -> str:
    """A login role's password: read from ``path``, or generated there once (mode 0600)."""
    try:
        text = path.read_text(encoding="ascii").strip()
        if len(text) >= 32:
            return text
    except (OSError, UnicodeDecodeError):
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    password = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(password + "\n")
    return password


@contextmanager
def role_setup(conn: psycopg.Connection, refused: str) -> Iterator[psycopg.Connection]:
    """An owner's connection preparing a login role: a refused privilege is the one-line ``refused``,
    any other driver error is translated, and the connection is closed after."""
    try:
        yield conn
    except psycopg.errors.InsufficientPrivilege:
        raise DatabaseError(refused) from None
    except psycopg.Error as exc:
        raise translate(exc) from None
    finally:
        conn.close()


def analyst_password(home: Path) -> str:
    """The role's password: read from the home, or generated there once (0600)."""
    return stored_password(Path(home) / "analyst-password")


def reader_database(db: Database) -> Database:
    """The database user SQL runs on: as ``cbir_analyst`` when ``db`` connects as a privileged role (a
    superuser, CREATEROLE, BYPASSRLS or a server-files/program role), else as ``db``'s own role."""
    refused = (
        "the database user cannot prepare the cbir_analyst role for read-only SQL (it needs to alter "
        "roles); connect with a reader's DSN instead"
    )
    with role_setup(db.connect(autocommit=True, vector=False), refused) as conn:
        if not scalar(conn, queries.get("readonly", "privileged")):
            return db
        if not scalar(conn, queries.get("readonly", "analyst_exists")):
            raise ConfigError("the database has no cbir_analyst role: run `cbir-pg db migrate` first")
        password = analyst_password(db.settings.home)
        role = sql.Identifier(ROLE)
        conn.execute(queries.get("readonly", "set_password", role=role, password=sql.Literal(password)))
        conn.execute(queries.get("readonly", "grant_read", role=role))
    return Database(login_dsn(db.dsn, ROLE, password), settings=db.settings)


def run_read_only(db: Database, query: str, params=None) -> tuple[list[str], list[tuple]]:  # noqa: ANN001
    """``(column names, rows)`` of one statement run on ``db`` in a read-only transaction, then rolled
    back. Several statements in one string are refused by the server (one prepared statement per call)."""
    conn = db.connect(autocommit=False, vector=True, row_factory=psycopg.rows.tuple_row)
    try:
        conn.execute("set transaction read only")
        cur = conn.execute(query, params, prepare=True)
        columns = [d.name for d in cur.description] if cur.description else []
        rows = cur.fetchall() if cur.description else []
        return columns, rows
    except psycopg.Error as exc:
        raise translate(exc) from None
    finally:
        conn.close()  # never committed: closing rolls the transaction back
