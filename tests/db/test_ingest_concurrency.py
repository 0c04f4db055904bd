"""Many workers, crashes: every image embedded exactly once, no gaps, nothing half-written."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import require_data
from ingest_seed import seed_medmnist

from cbir_pg.db.database import Database

pytestmark = pytest.mark.real_data


def _state(dsn: str, key: str) -> tuple[list[int], list[int], np.ndarray]:
    from cbir_pg.db.connect import connect

    with connect(dsn) as conn:
        images = [r[0] for r in conn.execute("select id from cbir.image where not excluded order by id")]
        rows = conn.execute(
            f"select image_id, embedding from cbir.embedding_{key} order by image_id"
        ).fetchall()
    norms = np.array([np.linalg.norm(r[1].to_numpy()) for r in rows])
    return images, [r[0] for r in rows], norms


def test_three_processes_embed_each_image_exactly_once(db, tmp_path):
    from cbir_pg.ingest import run_ingest

    n = seed_medmnist(db, require_data(), tmp_path, flags=("breastmnist",))
    s = run_ingest(
        Database(db), "tiny_cnn", processes=3, batch_size=16, loader_workers=0, device="cpu", progress=False
    )
    images, embedded, norms = _state(db, "tiny_cnn")
    assert s.processes == 3 and s.embedded == n == len(images) and s.done == n and s.remaining == 0
    assert embedded == images  # no gaps, no duplicates (ordered, compared whole)
    assert np.allclose(norms, 1.0, atol=1e-5)
    assert s.batches >= 3  # the work was shared out in batches


def test_killed_worker_leaves_no_half_batch_and_rerun_completes(db, tmp_path):
    from cbir_pg.db.connect import connect

    n = seed_medmnist(db, require_data(), tmp_path, flags=("breastmnist",))
    cmd = [
        sys.executable,
        "-m",
        "cbir_pg",
        "--dsn",
        db,
        "ingest",
        "--model",
        "tiny_cnn",
        "--device",
        "cpu",
        "-w",
        "1",
        "-b",
        "8",
        "--no-progress",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    done = 0
    deadline = time.monotonic() + 120
    with connect(db, autocommit=True) as conn:
        while time.monotonic() < deadline and proc.poll() is None:
            exists = conn.execute("select to_regclass('cbir.embedding_tiny_cnn') is not null").fetchone()[0]
            done = conn.execute("select count(*) from cbir.embedding_tiny_cnn").fetchone()[0] if exists else 0
            if done > 0:
                break
            time.sleep(0.02)
    assert proc.poll() is None, (
        f"the worker finished before it could be killed: {proc.stderr.read().decode()}"
    )
    os.killpg(proc.pid, signal.SIGKILL)  # the worker and its DataLoader process
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL

    time.sleep(0.5)  # the server notices the dropped connections and rolls their batches back
    images, embedded, _ = _state(db, "tiny_cnn")
    assert 0 < len(embedded) < n
    assert (
        len(embedded) % 8 == 0
    )  # only whole committed batches of 8 (780 = 97 x 8 + 4; the last is not reached)

    r = subprocess.run([*cmd[:-1], "--no-progress"], capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr
    images, embedded, norms = _state(db, "tiny_cnn")
    assert embedded == images and len(images) == n  # complete, no duplicates
    assert np.allclose(norms, 1.0, atol=1e-5)
