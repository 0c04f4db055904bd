"""``alembic upgrade head`` and ``alembic current`` from the repository root with a DSN (alembic.ini),
as docs/deploy.md says: tables from the revisions, then the SQL functions and views."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg
from conftest import create_database, drop_database

REPO = Path(__file__).resolve().parents[2]


def _alembic(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "alembic", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
        env=env,
    )


def test_plain_alembic_from_the_repo_root(pg_server_dsn: str) -> None:
    from cbir_pg.db.migrate import head_revision

    name = f"alembic_{uuid.uuid4().hex[:8]}"
    dsn = create_database(pg_server_dsn, name)
    env = {k: v for k, v in os.environ.items() if k != "CBIR_PG_DSN"}
    try:
        before = _alembic("-x", f"dsn={dsn}", "current", env=env)
        assert before.returncode == 0, before.stderr
        assert head_revision() not in before.stdout
        up = _alembic("-x", f"dsn={dsn}", "upgrade", "head", env=env)
        assert up.returncode == 0, up.stderr
        now = _alembic("current", env={**env, "CBIR_PG_DSN": dsn})
        assert now.returncode == 0 and f"{head_revision()} (head)" in now.stdout, now.stdout + now.stderr
        with psycopg.connect(dsn) as conn:
            assert conn.execute("select to_regclass('cbir.image') is not null").fetchone()[0]
            # the views and functions of sql/schema came with the upgrade
            assert conn.execute("select to_regclass('cbir_report.leaderboard') is not null").fetchone()[0]
            assert conn.execute(
                "select to_regprocedure('cbir_report.round4(double precision)') is not null"
            ).fetchone()[0]
        # without a DSN: the embedded server of CBIR_PG_HOME, like every cbir-pg command
        # (tests/db/test_first_hour.py::test_plain_alembic_current_uses_the_embedded_server)
    finally:
        drop_database(pg_server_dsn, name)
