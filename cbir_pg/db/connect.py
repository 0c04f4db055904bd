"""The driver boundary below :class:`cbir_pg.db.database.Database`: DSN resolution (explicit →
``CBIR_PG_DSN`` → embedded server), pgvector type registration, password redaction, and the
translation of driver errors into one-line :class:`CbirError` (:func:`translate`, used by
:func:`cbir_pg.db.database.db_errors`). Library code opens connections through a ``Database``.
"""

from __future__ import annotations

import re
from typing import Any

import psycopg
from psycopg import sql

from cbir_pg.config import Settings, get_settings
from cbir_pg.errors import CbirError, ConnectionLostError, DatabaseError

_URI_PASSWORD = re.compile(r"(postgres(?:ql)?(?:\+\w+)?://[^:/@\s]*:)([^@\s]*)(@)")
_KV_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)
_QUERY_PASSWORD = re.compile(r"([?&]password=)([^&\s]*)", re.IGNORECASE)


def redact(text: str) -> str:
    """Replace any password in a DSN (URI or key=value form) or a message quoting one by ``***``."""
    text = _URI_PASSWORD.sub(lambda m: m.group(1) + ("***" if m.group(2) else "") + m.group(3), text)
    text = _KV_PASSWORD.sub(r"\1***", text)
    return _QUERY_PASSWORD.sub(r"\1***", text)


def translate(exc: BaseException, dsn: str | None = None) -> CbirError:
    """Turn a driver exception into a one-line :class:`DatabaseError` with secrets redacted."""
    if isinstance(exc, CbirError):
        return exc
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, psycopg.OperationalError):
        where = f" ({redact(dsn)})" if dsn else ""
        return ConnectionLostError(redact(f"cannot connect to PostgreSQL{where}: {msg}"))
    return DatabaseError(redact(f"database error: {msg}"))


def embedded_dsn(settings: Settings, start: bool = True) -> str:
    """DSN of the embedded server's ``cbir`` database, starting the server (and creating the db) on demand."""
    from cbir_pg.db.server import EmbeddedServer

    server = EmbeddedServer(settings.pgdata)
    st = server.start() if start else server.status()
    admin = st.uri("postgres")
    try:
        with psycopg.connect(admin, autocommit=True) as conn:
            exists = conn.execute(
                "select 1 from pg_database where datname = %s", (settings.database,)
            ).fetchone()
            if not exists:
                conn.execute(sql.SQL("create database {}").format(sql.Identifier(settings.database)))
    except psycopg.errors.DuplicateDatabase:
        pass
    except psycopg.Error as exc:
        raise translate(exc, admin) from None
    return st.uri(settings.database)


def resolve_dsn(dsn: str | None = None, settings: Settings | None = None) -> str:
    """The DSN every command uses: ``--dsn``, else ``CBIR_PG_DSN``, else the embedded server."""
    settings = settings or get_settings(dsn)
    if dsn:
        return dsn
    if settings.dsn:
        return settings.dsn
    return embedded_dsn(settings)


def register_vector_types(conn: psycopg.Connection) -> bool:
    """Register pgvector's types on ``conn`` when the extension exists; returns whether it did."""
    from pgvector.psycopg import register_vector

    row = conn.execute("select 1 from pg_extension where extname = 'vector'").fetchone()
    if not row:
        return False
    register_vector(conn)
    return True


def connect(dsn: str, *, autocommit: bool = False, vector: bool = True, **kwargs: Any) -> psycopg.Connection:
    """Open a raw connection (tuple rows unless ``row_factory`` is given); driver errors become a
    one-line, redacted :class:`DatabaseError`. Library code uses :meth:`Database.connect` instead."""
    try:
        conn = psycopg.connect(dsn, autocommit=autocommit, connect_timeout=10, **kwargs)
    except psycopg.Error as exc:
        raise translate(exc, dsn) from None
    if vector:
        try:
            register_vector_types(conn)
            if not autocommit:
                conn.commit()
        except psycopg.Error as exc:
            conn.close()
            raise translate(exc, dsn) from None
    return conn
