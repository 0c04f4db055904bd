"""Owner operations wait for their locks with a timeout, and say who holds them.

``cbir-pg db migrate``, ``datasets import`` and the first ``ingest`` of a model serialise on advisory
locks. A reader must not be able to hold those locks and stall the owner: ``sql/schema/93_guards.sql``
revokes the advisory-lock functions from PUBLIC (only the owner and ``cbir_worker`` may call them), and
every wait here is bounded by :func:`lock_timeout` (``CBIR_PG_LOCK_TIMEOUT`` seconds, default 60): it
polls ``pg_try_advisory_lock`` and, at the deadline, raises :class:`LockTimeoutError` naming the
sessions that hold the lock (role, pid, state, for how long). The DDL of a migration runs under the same
``lock_timeout``, so a session holding a table lock delays it by at most that long.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

from cbir_pg.db import queries
from cbir_pg.errors import DatabaseError

ENV = "CBIR_PG_LOCK_TIMEOUT"
DEFAULT_TIMEOUT = 60.0


def scalar(conn: psycopg.Connection, query, params=None):  # noqa: ANN001
    """One value (no import of :mod:`cbir_pg.db.database`, which imports :mod:`cbir_pg.db.connect`)."""
    from psycopg.rows import scalar_row

    with conn.cursor(row_factory=scalar_row) as cur:
        return cur.execute(query, params).fetchone()


def dict_cursor(conn: psycopg.Connection) -> psycopg.Cursor:
    from psycopg.rows import dict_row

    return conn.cursor(row_factory=dict_row)


class LockTimeoutError(DatabaseError):
    """An owner operation gave up waiting for a lock; the message names who holds it."""


def lock_timeout() -> float:
    """Seconds an owner operation waits for a lock: ``CBIR_PG_LOCK_TIMEOUT`` (default 60)."""
    text = os.environ.get(ENV, "").strip()
    if not text:
        return DEFAULT_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        raise DatabaseError(f"{ENV}={text!r}: expected a number of seconds") from None
    if not value > 0:
        raise DatabaseError(f"{ENV}={text!r}: expected a positive number of seconds")
    return value


def describe(rows: list[dict]) -> str:
    """``role alice (pid 123, idle in transaction for 42 s)``, joined; 'an unknown session' if none."""
    if not rows:
        return "a session that has since gone"
    return ", ".join(
        f"role {r['user_name']} (pid {r['pid']}, {r['state']} for {r['seconds']} s"
        + (f", {r['application']}" if r["application"] else "")
        + ")"
        for r in rows
    )


def holders(conn: psycopg.Connection, key: int) -> str:
    hi, lo = (key >> 32) & 0xFFFFFFFF, key & 0xFFFFFFFF
    rows = dict_cursor(conn).execute(queries.get("locks", "holders"), {"hi": hi, "lo": lo}).fetchall()
    return describe(rows)


def blockers(conn: psycopg.Connection) -> str:
    """The sessions with a transaction open in this database (who a timed-out DDL waited on)."""
    return describe(dict_cursor(conn).execute(queries.get("locks", "relation_blockers")).fetchall())


def wait_for_lock(
    conn: psycopg.Connection, key: int, what: str, *, xact: bool = False, timeout: float | None = None
) -> None:
    """Take advisory lock ``key`` (session-level, or transaction-level with ``xact``), waiting at most
    ``timeout`` seconds (default :func:`lock_timeout`); then :class:`LockTimeoutError` naming the holders."""
    timeout = lock_timeout() if timeout is None else timeout
    deadline = time.monotonic() + timeout
    query = queries.get("locks", "try_xact_lock" if xact else "try_lock")
    pause = 0.05
    while not scalar(conn, query, {"key": key}):
        left = deadline - time.monotonic()
        if left <= 0:
            raise LockTimeoutError(
                f"{what}: gave up after {timeout:g} s waiting for a lock held by {holders(conn, key)}"
                f" (wait longer with {ENV}=SECONDS)"
            )
        time.sleep(min(pause, left))
        pause = min(pause * 2, 0.5)


@contextmanager
def advisory_lock(
    conn: psycopg.Connection, key: int, what: str, timeout: float | None = None
) -> Iterator[None]:
    """``with advisory_lock(conn, key, "db migrate"):`` a session-level lock on an autocommit ``conn``,
    waited for with a timeout and always released."""
    wait_for_lock(conn, key, what, timeout=timeout)
    try:
        yield
    finally:
        with contextlib.suppress(psycopg.Error):  # the connection is gone: so is the lock
            conn.execute(queries.get("locks", "unlock"), {"key": key})


def key_of(conn: psycopg.Connection, query: str, name: str) -> int:
    """A lock key computed by the server (``dataset_key`` or ``text_key`` of sql/queries/locks.sql)."""
    return int(scalar(conn, queries.get("locks", query), {"name": name}))
