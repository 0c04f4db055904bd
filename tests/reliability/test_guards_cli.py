"""Smaller guards (issue 22, section 6): ``eval export --out`` is a real folder and a known run,
negative counts never reach SQL, index builds of one model are serialised and a crashed build's staging
index does not outlive it, ``datasets list`` prints no markup, and ``db start --listen`` on a
non-loopback address asks for ``--allow-remote`` as ``serve`` does.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import psycopg
import pytest
from dbhelp import cbir_pg

from cbir_pg.db.database import Database
from cbir_pg.errors import ConfigError, NotFoundError

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
MODEL = "tiny_cnn"


def _cli(db: str, *args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    """The real entry point (its one error handler), in a subprocess; ``output`` is stdout + stderr."""
    r = cbir_pg("--dsn", db, *args, env={**os.environ, "COLUMNS": "200"}, timeout=300, cwd=cwd)
    r.output = r.stdout + r.stderr  # type: ignore[attr-defined]
    r.exit_code = r.returncode  # type: ignore[attr-defined]
    return r


# --------------------------------------------------------------------------- eval export --out
def test_export_refuses_outputs_that_are_not_a_plain_folder(db: str, tmp_path: Path, monkeypatch) -> None:
    from cbir_pg.eval.export import export_runs

    monkeypatch.chdir(tmp_path)
    target = tmp_path / "elsewhere"
    target.mkdir()
    (tmp_path / "link").symlink_to(target, target_is_directory=True)
    with psycopg.connect(db) as conn:
        for out in ("/dev/null", "/proc/self", "", str(tmp_path / "link")):
            with pytest.raises(ConfigError):
                export_runs(conn, out, fmt="csv")
            conn.rollback()
        # a run that does not exist is an error, not empty files with exit 0
        with pytest.raises(NotFoundError, match="no evaluation run 424242"):
            export_runs(conn, tmp_path / "out", fmt="csv", run_ids=[424242])
    assert not list(target.iterdir()) and not list(tmp_path.glob("*.csv"))
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())

    r = _cli(db, "eval", "export", "--out", "", "--format", "csv", cwd=tmp_path)
    assert r.exit_code == 1 and "--out" in r.output and "Traceback" not in r.output, r.output
    r = _cli(db, "eval", "export", "--out", "/dev/null", "--format", "csv")
    assert r.exit_code == 1 and "not a folder" in r.output and "Traceback" not in r.output, r.output
    assert not list(tmp_path.glob("*.csv"))


def test_export_replaces_a_planted_symlink_instead_of_following_it(db: str, tmp_path: Path) -> None:
    from cbir_pg.eval.export import export_runs

    victim = tmp_path / "victim.txt"
    victim.write_text("keep me\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / "runs.csv").symlink_to(victim)
    with psycopg.connect(db) as conn:
        export_runs(conn, out, fmt="csv")
    assert victim.read_text() == "keep me\n"
    assert not (out / "runs.csv").is_symlink() and (out / "runs.csv").read_text().startswith("run_id,")


# --------------------------------------------------------------------------- negative counts
def test_negative_counts_are_refused_before_sql(db: str, tmp_path: Path) -> None:
    from cbir_pg.eval.report import write_report
    from cbir_pg.index import build_index

    with pytest.raises(ConfigError, match="--recall-queries"):
        build_index(Database(db), MODEL, recall_queries=-1, progress=False)
    with pytest.raises(ConfigError, match="--tsne-sample"):
        write_report(Database(db), tmp_path / "r", tsne_sample=-1)
    r = _cli(db, "index", "build", "--model", MODEL, "--recall-queries", "-1")
    assert r.exit_code == 1 and "--recall-queries" in r.output and "Traceback" not in r.output, r.output


# --------------------------------------------------------------------------- index builds
def _seed_vectors(dsn: str, rows: int = 4000) -> None:
    from relhelp import seed_tiny_cnn_vectors

    seed_tiny_cnn_vectors(dsn, "g", rows)


def test_two_concurrent_builds_of_one_model_both_succeed(db: str) -> None:
    from cbir_pg.index import build_index, index_status

    _seed_vectors(db)
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def build() -> None:
        start.wait()
        try:
            build_index(
                Database(db), MODEL, m=16, ef_construction=64, parallel_workers=0, progress=False,
                recall_queries=0, storage="vector",
            )  # fmt: skip
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=build) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, [str(e) for e in errors]
    st = [s for s in index_status(Database(db), MODEL) if s.index_name]
    assert [s.index_name for s in st] == ["embedding_tiny_cnn_hnsw_idx"]


def test_a_crashed_builds_complete_staging_index_does_not_outlive_it(db: str) -> None:
    """A build killed after its CREATE INDEX finished but before the swap leaves a valid ``_new`` index,
    which every insert would maintain; the next status, ingest or migrate drops it."""
    from cbir_pg.db.migrate import migrate
    from cbir_pg.index import build_index, index_status

    _seed_vectors(db, 500)
    build_index(
        Database(db), MODEL, m=4, ef_construction=16, progress=False, recall_queries=0, storage="vector"
    )
    staging = "embedding_tiny_cnn_hnsw_new"
    create = (
        f"create index {staging} on cbir.embedding_tiny_cnn using hnsw (embedding vector_cosine_ops)"
        " with (m = 4, ef_construction = 16)"
    )
    with psycopg.connect(db, autocommit=True) as c:
        c.execute(create)
    names = [s.index_name for s in index_status(Database(db), MODEL)]
    assert names == ["embedding_tiny_cnn_hnsw_idx"], names
    with psycopg.connect(db, autocommit=True) as c:
        c.execute(create)
    migrate(Database(db))
    with psycopg.connect(db) as c:
        assert c.execute("select to_regclass(%s)", (f"cbir.{staging}",)).fetchone()[0] is None


# --------------------------------------------------------------------------- datasets list
def test_datasets_list_prints_no_markup(db: str) -> None:
    with psycopg.connect(db) as c:
        c.execute(
            "insert into cbir.dataset (key, kind, name, import_status) values ('half', 'csv', 'half', 'importing')"
        )
    r = _cli(db, "datasets", "list")
    assert r.exit_code == 0, r.output
    assert "import unfinished" in r.output and "[yellow]" not in r.output and "[/]" not in r.output


# --------------------------------------------------------------------------- db start --listen
def test_db_start_on_every_interface_needs_allow_remote(cli_env: dict[str, str]) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**cli_env, "PYTHONPATH": str(REPO) + os.pathsep + cli_env.get("PYTHONPATH", "")}
    r = subprocess.run(
        [sys.executable, "-m", "cbir_pg", "db", "start", "--listen", f"0.0.0.0:{port}"],
        env=env, capture_output=True, text=True, timeout=180, cwd=REPO,
    )  # fmt: skip
    assert r.returncode == 1 and "--allow-remote" in r.stderr, (r.stdout, r.stderr)
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0  # nothing listens there
    r = subprocess.run(
        [sys.executable, "-m", "cbir_pg", "db", "start", "--listen", f"0.0.0.0:{port}", "--allow-remote"],
        env=env, capture_output=True, text=True, timeout=180, cwd=REPO,
    )  # fmt: skip
    assert r.returncode == 0 and "warning" in r.stderr, (r.stdout, r.stderr)


def test_the_embedded_server_starts_its_reader_watchdog(cli_env: dict[str, str]) -> None:
    import time

    from cbir_pg.db.server import try_lock_file, watchdog_lock

    env = {**cli_env, "PYTHONPATH": str(REPO) + os.pathsep + cli_env.get("PYTHONPATH", "")}
    r = subprocess.run(
        [sys.executable, "-m", "cbir_pg", "db", "migrate"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    lock = watchdog_lock(Path(cli_env["CBIR_PG_HOME"]))
    deadline = time.monotonic() + 30
    held = False
    while not held and time.monotonic() < deadline:
        fh = try_lock_file(lock)
        held = fh is None
        if fh is not None:
            fh.close()
            time.sleep(0.5)
    assert held, "no watchdog holds the home's watchdog lock"
