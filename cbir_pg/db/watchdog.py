"""The reader watchdog: a reader's time limits hold whatever the reader sets.

A reader's ``statement_timeout`` and ``idle_in_transaction_session_timeout`` are role settings
(``cbir.reader_limits_v1()``), and a session may lift them itself (``set statement_timeout = 0``, or
``alter role current_user reset all``). PostgreSQL cannot forbid that, so the owner's side enforces them:
every :data:`INTERVAL` seconds the watchdog calls ``cbir.reader_watchdog_v1()`` (``sql/schema/
93_guards.sql``), which cancels a reader statement that has run past the limit and ends a reader
session idle in a transaction past its limit. A limit is therefore enforced within one interval of
being passed, whatever the session set.

The embedded server starts one watchdog per home with the server (:func:`cbir_pg.db.server.start_watchdog`,
called by ``cbir_pg.db.connect.start_embedded``); it holds ``$CBIR_PG_HOME/watchdog.lock`` for its life, so a
second one exits at once, and it exits by itself once the server has been unreachable for a few
sweeps (after ``cbir-pg db stop``). For an external server, run ``cbir-pg db watchdog`` as a service.
Each action is appended to ``$CBIR_PG_HOME/watchdog.log``.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from cbir_pg.db import queries
from cbir_pg.db.database import Database, db_errors, scalar
from cbir_pg.db.server import try_lock_file, watchdog_lock
from cbir_pg.errors import CbirError

#: seconds between two sweeps: a limit is enforced within this long of being passed
INTERVAL = 5.0
#: consecutive failed sweeps (the server is gone) after which the watchdog ends
MAX_FAILURES = 3


@dataclass(frozen=True)
class Action:
    pid: int
    role_name: str
    action: str
    seconds: float


def sweep(db: Database, statement_limit: str | None = None, idle_limit: str | None = None) -> list[Action]:
    """One pass of ``cbir.reader_watchdog_v1`` (limits as intervals, e.g. ``'2min'``; default: the
    reader limits); what it did. A database without the function yet (not migrated) does nothing."""
    with db_errors(), db.connect(autocommit=True, vector=False) as conn:
        if not scalar(conn, queries.get("locks", "watchdog_ready")):
            return []
        rows = conn.execute(
            queries.get("locks", "watchdog_sweep"),
            {"statement_limit": statement_limit, "idle_limit": idle_limit},
        ).fetchall()
    return [Action(int(r["pid"]), r["role_name"], r["action"], float(r["seconds"])) for r in rows]


def watch(
    db: Database,
    interval: float = INTERVAL,
    stop: threading.Event | None = None,
    on_action=None,  # noqa: ANN001 - a callable receiving each Action
    max_failures: int = MAX_FAILURES,
) -> None:
    """Sweep every ``interval`` seconds until ``stop`` is set or ``max_failures`` sweeps in a row fail."""
    stop = stop or threading.Event()
    failures = 0
    while not stop.is_set():
        try:
            for action in sweep(db):
                if on_action:
                    on_action(action)
            failures = 0
        except CbirError:
            failures += 1
            if failures >= max_failures:
                return
        stop.wait(interval)


def _main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m cbir_pg.db.watchdog")
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--home", required=True)
    parser.add_argument("--interval", type=float, default=INTERVAL)
    args = parser.parse_args(argv)
    home = Path(args.home)
    fh = try_lock_file(watchdog_lock(home))
    if fh is None:
        return 0  # another watchdog serves this home

    def log(action: Action) -> None:
        with contextlib.suppress(OSError), open(home / "watchdog.log", "a", encoding="utf-8") as out:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            out.write(
                f"{stamp} {action.action}: role {action.role_name} pid {action.pid} after {action.seconds:.0f} s\n"
            )

    watch(Database(args.dsn), args.interval, on_action=log)
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
