"""The index is never missing (issue 13): ``index build`` on a model that has an index builds the new one
under a staging name and swaps it in within one transaction.

- during a rebuild, searches still see (and the planner still uses) the old, valid index;
- a crash during a rebuild (the postmaster and every backend SIGKILLed, then crash recovery) leaves the
  old index in place and valid, and the next build succeeds (a half-built staging index is dropped).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
import pytest
from dbhelp import fetch_one

from cbir_pg.db.database import Database

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
MODEL = "tiny_cnn"
INDEX = "embedding_tiny_cnn_hnsw_idx"
ROWS = 5000
#: parameters that make the rebuild take seconds, not milliseconds, on 5k 16-d vectors; a ``vector`` graph,
#: so the plain ``embedding <=> q`` query of the plan check can use it
SLOW = {"m": 16, "ef_construction": 64, "parallel_workers": 0, "storage": "vector"}


def _seed(dsn: str) -> None:
    """A dataset of ROWS images with random unit vectors of the tiny encoder, and a first, quick index."""
    from relhelp import seed_tiny_cnn_vectors

    from cbir_pg.index import build_index

    seed_tiny_cnn_vectors(dsn, "swap", ROWS)
    build_index(
        Database(dsn), MODEL, m=4, ef_construction=16, progress=False, recall_queries=0, storage="vector"
    )


def _live_index(dsn: str) -> tuple[int, bool, str] | None:
    row = fetch_one(
        dsn,
        "select c.oid::int, x.indisvalid, array_to_string(c.reloptions, ',') from pg_class c"
        " join pg_index x on x.indexrelid = c.oid where c.relname = %s",
        (INDEX,),
    )
    return tuple(row) if row else None  # type: ignore[return-value]


def _building(dsn: str) -> bool:
    with psycopg.connect(dsn, autocommit=True) as c:
        return bool(
            c.execute(
                "select count(*) from pg_stat_progress_create_index"
                " where relid = 'cbir.embedding_tiny_cnn'::regclass and phase like 'building%%'"
            ).fetchone()[0]
        )


def _wait(pred, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


def _search_plan_and_space(dsn: str) -> tuple[str | None, str]:
    with psycopg.connect(dsn) as c:
        ann = c.execute(f"select ann_index from cbir.model_vector_space('{MODEL}')").fetchone()[0]
        c.execute("set enable_seqscan = off")
        plan = "\n".join(
            r[0]
            for r in c.execute(
                "explain select image_id from cbir.embedding_tiny_cnn"
                " order by embedding <=> (select embedding from cbir.embedding_tiny_cnn limit 1) limit 10"
            )
        )
    return ann, plan


def test_searches_during_a_rebuild_use_the_old_index_and_the_new_one_is_swapped_in(db: str) -> None:
    from cbir_pg.index import build_index

    _seed(db)
    old = _live_index(db)
    assert old is not None and old[1] and "m=4" in old[2]

    outcome: dict = {}

    def rebuild() -> None:
        try:
            outcome["report"] = build_index(Database(db), MODEL, progress=False, recall_queries=0, **SLOW)
        except BaseException as exc:  # reported below
            outcome["error"] = exc

    t = threading.Thread(target=rebuild)
    t.start()
    try:
        _wait(lambda: _building(db) or not t.is_alive(), 300, "the rebuild to start building")
        assert t.is_alive(), f"the rebuild finished before it could be observed: {outcome}"
        ann, plan = _search_plan_and_space(db)
        assert ann == INDEX, "during the rebuild the model had no usable index"
        assert INDEX in plan, plan
        assert _live_index(db) == old
    finally:
        t.join(timeout=600)
    assert "error" not in outcome, outcome.get("error")
    new = _live_index(db)
    assert new is not None and new[1] and "m=16" in new[2] and new[0] != old[0]
    with psycopg.connect(db) as c:
        left = c.execute("select count(*) from pg_class where relname like '%%_new'").fetchone()[0]
    assert left == 0


@pytest.fixture
def own_server():
    """A dedicated embedded server (so it can be killed) with one migrated database; yields (server, dsn)."""
    from relhelp import own_embedded_server

    with own_embedded_server("swp") as server_and_dsn:
        yield server_and_dsn


def _kill_server_hard(pid: int) -> None:
    """SIGKILL the postmaster and every process it started (backends, parallel workers): a crash."""
    children = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if int((d / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    children.append(int(d.name))
            except (OSError, IndexError, ValueError):
                continue
    for p in [pid, *children]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGKILL)
    # wait until they are reaped: a zombie postmaster still "exists" for a pid-file check
    _wait(lambda: not Path(f"/proc/{pid}").exists(), 60, "the killed postmaster to be reaped")


@pytest.mark.parametrize("concurrently", [False, True], ids=["plain", "concurrently"])
def test_a_crash_during_a_rebuild_leaves_the_old_index_valid(own_server, concurrently: bool) -> None:
    from cbir_pg.index import build_index

    server, dsn = own_server
    _seed(dsn)
    old = _live_index(dsn)
    assert old is not None and old[1]

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from cbir_pg.db.database import Database\n"
            "from cbir_pg.index import build_index\n"
            f"build_index(Database({dsn!r}), {MODEL!r}, concurrently={concurrently}, progress=False, recall_queries=0,"
            f" **{SLOW!r})",
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        _wait(lambda: _building(dsn) or proc.poll() is not None, 300, "the rebuild to start building")
        assert proc.poll() is None, "the rebuild finished before the crash"
        _kill_server_hard(server.status().pid)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    server.start()  # crash recovery

    after = _live_index(dsn)
    assert after == old, "the old index is gone or changed after a crash during the rebuild"
    ann, plan = _search_plan_and_space(dsn)
    assert ann == INDEX and INDEX in plan

    # the next build succeeds and swaps in a new index (a half-built staging index is dropped first)
    report = build_index(
        Database(dsn), MODEL, m=8, ef_construction=32, progress=False, recall_queries=0, storage="vector"
    )
    assert report.index_name == INDEX
    new = _live_index(dsn)
    assert new is not None and new[1] and "m=8" in new[2]
    with psycopg.connect(dsn) as c:
        assert c.execute("select count(*) from pg_class where relname like '%%_new'").fetchone()[0] == 0
