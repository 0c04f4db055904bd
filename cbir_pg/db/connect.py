"""The driver boundary below :class:`cbir_pg.db.database.Database`: DSN resolution (explicit →
``CBIR_PG_DSN`` → embedded server), pgvector type registration, password redaction, and the
translation of driver errors into one-line :class:`CbirError` (:func:`translate`, used by
:func:`cbir_pg.db.database.db_errors`). Library code opens connections through a ``Database``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql

from cbir_pg.config import Settings, get_settings
from cbir_pg.errors import CbirError, ConfigError, ConnectionLostError, DatabaseError

if TYPE_CHECKING:
    from cbir_pg.db.server import ServerStatus

#: advisory lock taken while the embedded server's database is created (concurrent first starts)
CREATE_DATABASE_LOCK = 0x0C_B1_70_02
_SCHEME = re.compile(r"postgres(?:ql)?(?:\+\w+)?://", re.IGNORECASE)
# Fallback patterns for free text. The URI one is greedy up to the last "@" of the token, so a
# password holding an unencoded "@" is redacted whole.
_URI_PASSWORD = re.compile(r"(postgres(?:ql)?(?:\+\w+)?://[^:/@\s]*:)(\S*)(@)", re.IGNORECASE)
_KV_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)
_QUERY_PASSWORD = re.compile(r"([?&]password=)([^&\s]*)", re.IGNORECASE)
_QUOTED = re.compile(r'"[^"]*"')
#: a known password shorter than this is not searched for in free text (it would eat ordinary words)
_MIN_SECRET = 3


def dsn_secrets(dsn: str | None) -> list[str]:
    """The password(s) ``dsn`` carries, as libpq parses them (:func:`psycopg.conninfo.conninfo_to_dict`)
    and, for a URI, as written in its user-info part up to the last ``@`` (what the user meant when the
    password holds an unencoded ``@``), raw and percent-decoded."""
    if not dsn:
        return []
    from urllib.parse import unquote

    found: list[str] = []
    try:
        from psycopg.conninfo import conninfo_to_dict

        pw = conninfo_to_dict(dsn).get("password")
        if pw:
            found.append(str(pw))
    except psycopg.Error:
        pass
    m = _SCHEME.match(dsn)
    if m:
        rest = dsn[m.end() :]
        at = rest.rfind("@")
        colon = rest.find(":", 0, at) if at > 0 else -1
        if colon >= 0:
            raw = rest[colon + 1 : at]
            found += [raw, unquote(raw)]
    for m2 in _KV_PASSWORD.finditer(dsn):
        found.append(m2.group(2).strip("'"))
    return [s for s in dict.fromkeys(found) if len(s) >= _MIN_SECRET]


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """Replace any password in ``text`` by ``***``: a DSN (URI or key=value form) or a message quoting one.

    Known passwords (``secrets``, e.g. :func:`dsn_secrets` of the DSN in use) are removed wherever they
    occur; the patterns then catch passwords in free text, a URI's up to the last ``@`` of its user-info
    part, so a password holding an unencoded ``@`` is redacted whole."""
    for secret in sorted({*secrets, *dsn_secrets(text)}, key=len, reverse=True):
        text = text.replace(secret, "***")
    text = _URI_PASSWORD.sub(lambda m: m.group(1) + ("***" if m.group(2) else "") + m.group(3), text)
    text = _KV_PASSWORD.sub(r"\1***", text)
    return _QUERY_PASSWORD.sub(r"\1***", text)


def redact_dsn(dsn: str) -> str:
    """A DSN fit to print: its password replaced by ``***``; a DSN libpq cannot parse is not shown at all
    (where a password ends is then unknown)."""
    try:
        check_dsn(dsn)
    except ConfigError:
        return "<a DSN that cannot be parsed, not shown>"
    return redact(dsn)


def login_dsn(dsn: str, user: str, password: str) -> str:
    """``dsn`` with the user and password replaced (host, port and database kept)."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    params = conninfo_to_dict(dsn)
    params.update(user=user, password=password)
    return make_conninfo(**params)


def check_dsn(dsn: str) -> str:
    """Refuse a DSN libpq cannot parse, or one whose password libpq would read differently than it is
    written, with a message that quotes no part of it (libpq's own messages quote fragments, which may be
    pieces of the password)."""
    from psycopg.conninfo import conninfo_to_dict

    try:
        conninfo_to_dict(dsn)
    except psycopg.Error as exc:
        raise ConfigError(f"the DSN cannot be parsed: {_unquoted(str(exc))} (the DSN is not shown)") from None
    m = _SCHEME.match(dsn)
    if m:
        rest = dsn[m.end() :].split("?", 1)[0]
        first_at = rest.find("@")
        slash = rest.find("/")
        if rest.count("@") > 1 or (0 <= slash < first_at and ":" in rest[:first_at]):
            raise ConfigError(
                "the DSN's user or password holds an unencoded '@' or '/': percent-encode it"
                " (%40, %2F) or use the key=value form (the DSN is not shown)"
            )
    return dsn


def _unquoted(message: str) -> str:
    """libpq's parse message with every quoted fragment of the DSN replaced (option names are kept)."""
    first = message.strip().splitlines()[0] if message.strip() else "invalid connection string"
    keywords = _conninfo_keywords()
    return _QUOTED.sub(lambda m: m.group(0) if m.group(0)[1:-1] in keywords else '"…"', first)


def _conninfo_keywords() -> set[str]:
    try:
        from psycopg import pq

        return {o.keyword.decode() for o in pq.Conninfo.get_defaults()}
    except Exception:  # pragma: no cover - libpq without conndefaults
        return set()


def translate(exc: BaseException, dsn: str | None = None) -> CbirError:
    """Turn a driver exception into a one-line :class:`DatabaseError` with secrets redacted."""
    if isinstance(exc, CbirError):
        return exc
    secrets = dsn_secrets(dsn)
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, psycopg.ProgrammingError) and ("connection info string" in msg or "URI" in msg):
        msg = _unquoted(msg)
    if isinstance(exc, psycopg.OperationalError):
        where = f" ({redact(redact_dsn(dsn), secrets)})" if dsn else ""
        return ConnectionLostError(redact(f"cannot connect to PostgreSQL{where}: {msg}", secrets))
    return DatabaseError(redact(f"database error: {msg}", secrets))


def embedded_dsn(settings: Settings, start: bool = True) -> str:
    """DSN of the embedded server's ``cbir`` database, starting the server (and creating the db) on demand."""
    if not start:
        from cbir_pg.db.server import EmbeddedServer

        return EmbeddedServer(settings.pgdata).status().uri(settings.database)
    return start_embedded(settings)[1]


def start_embedded(settings: Settings, listen: tuple[str, int] | None = None) -> tuple[ServerStatus, str]:
    """Start the embedded server (``listen``: also on TCP there) and create its database if needed;
    returns the server's status and the DSN of the database."""
    from cbir_pg.db.server import EmbeddedServer

    st = EmbeddedServer(settings.pgdata).start(listen=listen)
    admin = st.uri("postgres")
    try:
        with psycopg.connect(admin, autocommit=True) as conn:
            # five first commands at once: one creates the database, the others wait and find it. The
            # lock is taken only while the database is missing, and waited for with a timeout, so a
            # session holding it later (any role may connect to `postgres`) cannot stall every command.
            def exists() -> bool:
                return bool(
                    conn.execute(
                        "select 1 from pg_database where datname = %s", (settings.database,)
                    ).fetchone()
                )

            if not exists():
                from cbir_pg.db.locks import wait_for_lock

                wait_for_lock(conn, CREATE_DATABASE_LOCK, "creating the database")
            if not exists():
                conn.execute(sql.SQL("create database {}").format(sql.Identifier(settings.database)))
    except (psycopg.errors.DuplicateDatabase, psycopg.errors.UniqueViolation):
        pass
    except psycopg.Error as exc:
        raise translate(exc, admin) from None
    uri = st.uri(settings.database)
    from cbir_pg.db.server import start_watchdog

    start_watchdog(uri, settings.home)  # readers' time limits hold whatever they set (docs/reliability.md)
    return st, uri


def resolve_dsn(dsn: str | None = None, settings: Settings | None = None) -> str:
    """The DSN every command uses: ``--dsn``, else ``CBIR_PG_DSN``, else the embedded server."""
    settings = settings or get_settings(dsn)
    if dsn:
        return check_dsn(dsn)
    if settings.dsn:
        return check_dsn(settings.dsn)
    return embedded_dsn(settings)


def register_vector_types(conn: psycopg.Connection) -> bool:
    """Register pgvector's types on ``conn`` when the extension exists; returns whether it did."""
    from pgvector.psycopg import register_vector
    from psycopg.rows import tuple_row

    with conn.cursor(row_factory=tuple_row) as cur:  # whatever row factory the connection has
        row = cur.execute("select 1 from pg_extension where extname = 'vector'").fetchone()
    if not row:
        return False
    register_vector(conn)
    return True


def connect(dsn: str, *, autocommit: bool = False, vector: bool = True, **kwargs: Any) -> psycopg.Connection:
    """Open a raw connection (tuple rows unless ``row_factory`` is given); driver errors become a
    one-line, redacted :class:`DatabaseError`. Library code uses :meth:`Database.connect` instead."""
    check_dsn(dsn)
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
