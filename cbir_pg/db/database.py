"""The :class:`Database`: the one object library functions receive instead of a DSN string.

It owns what every caller would otherwise repeat: DSN resolution (``--dsn`` → ``CBIR_PG_DSN`` → the
embedded server, started on demand), the settings, opening connections (pgvector types registered,
rows read by name with :func:`psycopg.rows.dict_row`) and the translation of driver errors into one-line,
redacted :class:`~cbir_pg.errors.CbirError` (:func:`db_errors`). The CLI opens one per command; the
evaluation runner opens its parallel snapshot connections through it. Like datasette's ``Database``,
it is cheap: nothing connects until a connection is asked for.

>>> db = Database("postgresql://cbir@localhost/cbir")          # doctest: +SKIP
>>> with db.connection() as conn:                               # commit on success, always closed
...     conn.execute("select count(*) as n from cbir.image").fetchone()["n"]
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import psycopg
from psycopg.rows import dict_row, scalar_row

from cbir_pg.config import Settings, get_settings
from cbir_pg.db.connect import connect, redact, resolve_dsn, translate
from cbir_pg.errors import CbirError

F = TypeVar("F", bound=Callable[..., Any])


@contextmanager
def db_errors(
    dsn: str | None = None,
    *,
    catch: type[BaseException] | tuple = psycopg.Error,
    using: Callable[[BaseException], CbirError] | None = None,
) -> Iterator[None]:
    """``with db_errors(): ...``: a driver error inside becomes a one-line, redacted
    :class:`~cbir_pg.errors.DatabaseError` (:class:`~cbir_pg.errors.ConnectionLostError` when the server
    went away), raised without the driver's chained traceback. ``CbirError`` passes through unchanged.
    ``catch=Exception`` also translates the errors of a driver wrapper (alembic's SQLAlchemy); ``using``
    maps some errors first (e.g. the SQL API's own ``no_data_found`` to :class:`NotFoundError`).
    Also usable as a decorator: ``@db_errors()``."""
    try:
        yield
    except CbirError:
        raise
    except catch as exc:
        raise (using(exc) if using else translate(exc, dsn)) from None


def wrap_db_errors(fn: F) -> F:
    """Decorator form of :func:`db_errors` for a whole function."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with db_errors():
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


class Database:
    """A PostgreSQL database with the cbir schema. ``Database()`` uses ``CBIR_PG_DSN`` or the embedded
    server; ``Database(dsn)`` a given server. The DSN is resolved on first use (:attr:`dsn`)."""

    def __init__(self, dsn: str | None = None, *, settings: Settings | None = None) -> None:
        if isinstance(dsn, Database):  # pragma: no cover - a caller passing one through
            dsn = dsn.dsn
        self._given = dsn
        self._settings = settings
        self._dsn: str | None = None

    # ------------------------------------------------------------------------------ identity
    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = get_settings(self._given)
        return self._settings

    @property
    def dsn(self) -> str:
        """The resolved DSN (starts the embedded server when no DSN was given or configured)."""
        if self._dsn is None:
            self._dsn = resolve_dsn(self._given, self.settings)
        return self._dsn

    def __repr__(self) -> str:
        return f"Database({redact(self._dsn or self._given or '<default>')!r})"

    # --------------------------------------------------------------------------- connections
    def connect(
        self, *, autocommit: bool = False, vector: bool = True, row_factory: Any = dict_row, **kwargs: Any
    ) -> psycopg.Connection:
        """A new connection (the caller closes it, e.g. ``with db.connect() as conn``). Rows come back as
        dicts; pgvector's types are registered unless ``vector=False``. Errors are one line, redacted."""
        return connect(self.dsn, autocommit=autocommit, vector=vector, row_factory=row_factory, **kwargs)

    @contextmanager
    def connection(self, **kwargs: Any) -> Iterator[psycopg.Connection]:
        """``with db.connection() as conn:`` commits on success, rolls back on error, always closes;
        driver errors inside become one-line :class:`~cbir_pg.errors.DatabaseError`."""
        conn = self.connect(**kwargs)
        with db_errors(), conn:
            yield conn

    def close(self) -> None:
        """Nothing is held between calls (connections are per call); kept for a ``with`` block."""

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def scalar(conn: psycopg.Connection, query: Any, params: Any = None) -> Any:
    """The single value of a one-row, one-column query (``None`` without a row), e.g. a ``count(*)``."""
    with conn.cursor(row_factory=scalar_row) as cur:
        return cur.execute(query, params).fetchone()


def dict_cursor(conn: psycopg.Connection) -> psycopg.Cursor:
    """A cursor whose rows are dicts, whatever row factory ``conn`` has (for connections from outside)."""
    return conn.cursor(row_factory=dict_row)
