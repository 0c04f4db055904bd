"""Helpers for tests that read a database or run the command line against one (importable from every
test folder: ``tests/db`` is on the path of the whole session, see ``tests/serve/servehelp.py``):

- :func:`fetch_all` / :func:`fetch_one`: one query in a connection of its own (committed and closed);
- :func:`cli`: ``cbir-pg --dsn DB ARGS`` in this process (typer's ``CliRunner``), its exit code checked;
- :func:`cbir_pg`: ``python -m cbir_pg ARGS`` in a subprocess that runs this checkout's code.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg

REPO = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------- queries
def fetch_all(dsn: str, query: str, params: tuple | dict | None = None) -> list[tuple]:
    """Every row of ``query``, read in a connection of its own."""
    with psycopg.connect(dsn) as c:
        return c.execute(query, params).fetchall()


def fetch_one(dsn: str, query: str, params: tuple | dict | None = None) -> tuple | None:
    """The first row of ``query`` (``None`` when there is none), read in a connection of its own."""
    with psycopg.connect(dsn) as c:
        return c.execute(query, params).fetchone()


# --------------------------------------------------------------------------- the command line
def cli(db: str, *args: str, code: int = 0, columns: int | None = None):
    """``cbir-pg --dsn DB ARGS`` run in this process, in a terminal ``columns`` wide (``None``: no
    ``COLUMNS``); asserts that it exits with ``code`` and returns typer's ``Result`` (``.output`` holds
    stdout and stderr, ``.stdout`` stdout alone)."""
    from typer.testing import CliRunner

    from cbir_pg.app.cli import app

    r = CliRunner().invoke(app, ["--dsn", db, *args], env={"COLUMNS": str(columns)} if columns else {})
    assert r.exit_code == code, (args, r.output, r.exception)
    return r


def cbir_pg(
    *args: str, env: dict[str, str] | None = None, timeout: float = 300, cwd: Path | None = None
) -> subprocess.CompletedProcess:
    """``python -m cbir_pg ARGS`` in a subprocess (text output captured) with this checkout first on
    ``PYTHONPATH``; ``env`` is its whole environment (default: this process's)."""
    env = dict(os.environ if env is None else env)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    return subprocess.run(
        [sys.executable, "-m", "cbir_pg", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        cwd=cwd,
    )
