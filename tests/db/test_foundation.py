"""Foundation: migrations round-trip, idempotent re-migration, the embedded server shared by CLI
processes, ``db url`` with pgvector ≥ 0.8, and one-line redacted connection errors."""

from __future__ import annotations

import subprocess
import sys

import psycopg
import pytest

from cbir_pg.db.connect import connect
from cbir_pg.db.database import Database
from cbir_pg.db.migrate import current_revision, downgrade, head_revision, migrate

EXPECTED_TABLES = {
    "dataset",
    "patient",
    "study",
    "image",
    "label",
    "label_map",
    "image_label",
    "encoder",
    "error",
    "ingest_failure",
    "eval_run",
    "eval_query",
    "eval_metric",
    "eval_class_metric",
    "installation",
}


def _tables(dsn: str) -> set[str]:
    with connect(dsn, vector=False) as c:
        rows = c.execute(
            "select table_name from information_schema.tables where table_schema = 'cbir' and table_type = 'BASE TABLE'"
        ).fetchall()
    return {r[0] for r in rows}


def _schema_fingerprint(dsn: str) -> list[tuple]:
    with connect(dsn, vector=False) as c:
        return c.execute(
            """
            select table_schema, table_name, column_name, data_type, is_nullable
            from information_schema.columns where table_schema in ('cbir', 'cbir_report')
            order by 1, 2, 3
            """
        ).fetchall()


def test_empty_database_upgrades_to_expected_schema(empty_db: str) -> None:
    assert current_revision(Database(empty_db)) is None
    result = migrate(Database(empty_db))
    assert result.after == head_revision()
    assert _tables(empty_db) >= EXPECTED_TABLES
    with connect(empty_db) as c:
        version = c.execute("select extversion from pg_extension where extname = 'vector'").fetchone()[0]
        roles = {r[0] for r in c.execute("select rolname from pg_roles where rolname like 'cbir_%'")}
        salt = c.execute("select value from cbir.installation where key = 'patient_salt'").fetchone()[0]
    assert tuple(int(x) for x in version.split(".")[:2]) >= (0, 8)
    assert {"cbir_reader", "cbir_worker"} <= roles
    assert len(salt) == 64


def test_upgrade_downgrade_upgrade_round_trips(empty_db: str) -> None:
    migrate(Database(empty_db))
    before = _schema_fingerprint(empty_db)
    downgrade(Database(empty_db), "base")
    assert current_revision(Database(empty_db)) is None
    assert _tables(empty_db) == set()
    migrate(Database(empty_db))
    assert _schema_fingerprint(empty_db) == before


def test_migrate_twice_is_a_no_op(db: str) -> None:
    before = _schema_fingerprint(db)
    with connect(db) as c:
        c.execute("insert into cbir.dataset (key, kind, name) values ('keepme', 'csv', 'Keep me')")
        c.commit()
    result = migrate(Database(db))
    assert not result.changed
    assert _schema_fingerprint(db) == before
    with connect(db) as c:
        assert c.execute("select count(*) from cbir.dataset where key = 'keepme'").fetchone()[0] == 1


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cbir_pg", *args], env=env, capture_output=True, text=True, timeout=180
    )


def test_two_cli_processes_share_one_embedded_server(cli_env: dict[str, str]) -> None:
    first = _cli(cli_env, "db", "url")
    assert first.returncode == 0, first.stderr
    url = first.stdout.strip()
    with psycopg.connect(url) as c:
        pid1 = c.execute("select pg_postmaster_start_time(), pg_backend_pid()").fetchone()[0]
    second = _cli(cli_env, "db", "url")
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip() == url
    with psycopg.connect(url) as c:
        assert c.execute("select pg_postmaster_start_time()").fetchone()[0] == pid1
        # one initdb only: a single cluster with our database
        assert c.execute("select count(*) from pg_database where datname = 'cbir'").fetchone()[0] == 1
    status = _cli(cli_env, "db", "status")
    assert "running" in status.stdout
    stop = _cli(cli_env, "db", "stop")
    assert stop.returncode == 0 and "stopped" in stop.stdout
    assert "stopped" in _cli(cli_env, "db", "status").stdout


def test_db_url_connects_with_pgvector_08(cli_env: dict[str, str]) -> None:
    assert _cli(cli_env, "db", "migrate").returncode == 0
    url = _cli(cli_env, "db", "url").stdout.strip()
    psql = subprocess.run(
        [
            str(__import__("cbir_pg.db.server", fromlist=["bin_dir"]).bin_dir() / "psql"),
            url,
            "-tAc",
            "select extversion from pg_extension where extname='vector'",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert psql.returncode == 0, psql.stderr
    major, minor = (int(x) for x in psql.stdout.strip().split(".")[:2])
    assert (major, minor) >= (0, 8)


@pytest.mark.parametrize(
    "dsn",
    [
        "postgresql://alice:s3cr3t-pw@127.0.0.1:1/cbir",
        "host=127.0.0.1 port=1 user=alice password=s3cr3t-pw dbname=cbir",
    ],
)
def test_bad_dsn_gives_one_redacted_line(cli_env: dict[str, str], dsn: str) -> None:
    r = _cli(cli_env, "--dsn", dsn, "db", "migrate")
    assert r.returncode == 1
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("error: cannot connect to PostgreSQL")
    assert "s3cr3t-pw" not in r.stderr + r.stdout
    assert "Traceback" not in r.stderr


def test_help_lists_db_group_and_is_light(cli_env: dict[str, str]) -> None:
    r = _cli(cli_env, "--help")
    assert r.returncode == 0 and " db " in r.stdout
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, cbir_pg.app.cli; print(sorted(m for m in ('torch','timm','open_clip','matplotlib') if m in sys.modules))",
        ],
        capture_output=True,
        text=True,
        env=cli_env,
        timeout=60,
    )
    assert probe.stdout.strip() == "[]", probe.stdout + probe.stderr
