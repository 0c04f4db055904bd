"""Faults (issue 8), on real MedMNIST images and the real import and ingest code, in real processes:

- crash: an ingest worker SIGKILLed in the middle of a batch (after its COPY, before its commit) leaves
  only whole committed batches; a rerun embeds every image exactly once, each with its own vector;
- database restart: the server is stopped and started during ingest; the worker reconnects and
  finishes, nothing lost;
- concurrency: 4 worker processes on the same model and dataset, all holding a claimed batch at the
  same moment, embed each image exactly once;
- import: an import killed half-way and run again gives the same database as an uninterrupted import.

The subprocesses run ``tests/reliability/fault_worker.py``, which wraps the real COPY (ingest) or the
real batch load (import) with a marker file and a short sleep, so the kill lands where it should.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import psycopg
import pytest
from psycopg import sql
from relhelp import canonical_dump, good_png, kill_when, spawn_fault_worker, wait_for

from cbir_pg.db import identifiers
from cbir_pg.db.database import Database

MODEL = "tiny_cnn"
N_IMAGES = 200


@pytest.fixture(scope="module")
def real_images(tmp_path_factory) -> Path:
    """An image folder of the first N_IMAGES real BreastMNIST training images, by class."""
    from conftest import require_data
    from PIL import Image

    data = np.load(require_data() / "breastmnist.npz")
    imgs, labels = data["train_images"][:N_IMAGES], data["train_labels"].reshape(-1)[:N_IMAGES]
    root = tmp_path_factory.mktemp("breast") / "breast"
    names = {0: "malignant", 1: "benign_or_normal"}
    for i, (img, lab) in enumerate(zip(imgs, labels, strict=True)):
        d = root / names[int(lab)]
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(d / f"{i:04d}.png")
    return root


def _import(dsn: str, root: Path, name: str = "breast", **kw):
    from cbir_pg.datasets.importer import import_dataset

    return import_dataset(
        Database(dsn), "imagefolder", root, name=name, modality="US", region="breast", progress=False, **kw
    )


def _claimable(dsn: str) -> int:
    with psycopg.connect(dsn) as c:
        return c.execute("select count(*) from cbir.image where not excluded").fetchone()[0]


def _stored(dsn: str) -> int:
    with psycopg.connect(dsn) as c:
        if not c.execute("select to_regclass(%s) is not null", (f"cbir.embedding_{MODEL}",)).fetchone()[0]:
            return 0
        return c.execute(
            sql.SQL("select count(*) from {}").format(identifiers.embedding_table(MODEL))
        ).fetchone()[0]


def _wait_no_open_transactions(dsn: str, timeout: float = 60) -> None:
    """A SIGKILLed client's backend ends when it notices the closed socket: wait for that."""

    def idle() -> bool:
        with psycopg.connect(dsn, autocommit=True) as c:
            n = c.execute(
                "select count(*) from pg_stat_activity where datname = current_database()"
                " and pid <> pg_backend_pid() and state like 'idle in transaction%%'"
            ).fetchone()[0]
        return n == 0

    wait_for(idle, timeout, "the killed worker's transaction to end")


def _assert_exactly_once_and_correct(dsn: str) -> None:
    """Every claimable image has exactly one vector, every vector is a finite unit vector, and each is
    the vector of its own image (recomputed from the file): nothing lost, nothing mixed up."""
    from pgvector.psycopg import register_vector

    from cbir_pg.encoders.base import create_encoder, embed_arrays
    from cbir_pg.images import decode_file

    with psycopg.connect(dsn) as c:
        register_vector(c)
        rows = c.execute(
            sql.SQL(
                "select i.id, d.root, i.uri, e.embedding from cbir.image i join cbir.dataset d on d.id = i.dataset_id"
                " left join {} e on e.image_id = i.id where not i.excluded order by i.id"
            ).format(identifiers.embedding_table(MODEL))
        ).fetchall()
        dupes = c.execute(
            sql.SQL("select count(*) - count(distinct image_id) from {}").format(
                identifiers.embedding_table(MODEL)
            )
        ).fetchone()[0]
        orphans = c.execute(
            sql.SQL(
                "select count(*) from {} e left join cbir.image i on i.id = e.image_id where i.id is null or i.excluded"
            ).format(identifiers.embedding_table(MODEL))
        ).fetchone()[0]
    missing = [r[2] for r in rows if r[3] is None]
    assert not missing, f"{len(missing)} images without a vector, e.g. {missing[:5]}"
    assert dupes == 0 and orphans == 0
    stored = np.stack([np.asarray(r[3].to_numpy(), dtype=np.float32) for r in rows])
    assert np.isfinite(stored).all()
    assert np.allclose(np.linalg.norm(stored, axis=1), 1.0, atol=1e-4)
    enc = create_encoder(MODEL, device="cpu")
    expected = embed_arrays(enc, [decode_file(Path(r[1]) / r[2]) for r in rows], batch_size=64)
    cos = (stored * expected).sum(axis=1)
    wrong = [rows[i][2] for i in np.flatnonzero(cos < 0.9999)]
    assert not wrong, f"{len(wrong)} images hold another image's vector, e.g. {wrong[:5]}"


# --------------------------------------------------------------------------- crash
def test_sigkill_mid_batch_then_rerun_embeds_each_image_exactly_once(
    db: str, real_images: Path, tmp_path: Path
) -> None:
    from cbir_pg.ingest.worker import run_ingest

    _import(db, real_images)
    total = _claimable(db)
    assert total >= 150
    batch = 8
    markers = tmp_path / "markers"
    markers.mkdir()
    proc = spawn_fault_worker("ingest", db, MODEL, str(batch), str(markers), "1.0", "0")
    # the third batch is COPYed and the worker sleeps before committing it: kill it there
    kill_when(proc, lambda: len(list(markers.glob("copied_*"))) >= 3, "three batches copied")
    assert proc.returncode == -signal.SIGKILL
    copied = len(list(markers.glob("copied_*")))
    _wait_no_open_transactions(db)
    stored = _stored(db)
    # only whole committed batches survive: the batch copied but not committed is gone entirely
    assert stored == (copied - 1) * batch, f"{stored} rows after {copied} copied batches of {batch}"
    assert 0 < stored < total

    summary = run_ingest(Database(db), MODEL, batch_size=32, loader_workers=0, device="cpu", progress=False)
    assert summary.embedded == total - stored
    assert summary.remaining == 0 and summary.failed == 0
    assert _stored(db) == total
    _assert_exactly_once_and_correct(db)


# --------------------------------------------------------------------------- concurrency
def test_four_concurrent_workers_embed_each_image_exactly_once(
    db: str, real_images: Path, tmp_path: Path
) -> None:
    _import(db, real_images)
    total = _claimable(db)
    markers = tmp_path / "markers"
    markers.mkdir()
    procs = [spawn_fault_worker("ingest", db, MODEL, "4", str(markers), "0.02", "4") for _ in range(4)]
    results = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=400)
            assert p.returncode == 0, f"worker failed (rc {p.returncode}):\n{err[-3000:]}"
            results.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    # the barrier made all four hold a claimed, copied, uncommitted batch at the same moment
    assert len(list(markers.glob("barrier_*"))) == 4
    assert all(r["embedded"] > 0 for r in results), results
    assert sum(r["embedded"] for r in results) == total, results
    assert all(r["failed"] == 0 for r in results)
    assert _stored(db) == total
    _assert_exactly_once_and_correct(db)


# --------------------------------------------------------------------------- database restart
@pytest.fixture
def own_server(template_db: str, pg_server_dsn: str):
    """A dedicated embedded server (so it can be stopped) with one migrated database; yields
    (server, dsn)."""
    from relhelp import own_embedded_server

    with own_embedded_server("rst") as server_and_dsn:
        yield server_and_dsn


def test_database_restart_during_ingest_worker_reconnects_and_finishes(
    own_server, real_images: Path, tmp_path: Path
) -> None:
    from cbir_pg.ingest.worker import run_ingest

    server, dsn = own_server
    _import(dsn, real_images)
    total = _claimable(dsn)
    markers = tmp_path / "markers"
    markers.mkdir()
    proc = spawn_fault_worker("ingest", dsn, MODEL, "8", str(markers), "0.3", "0")
    try:
        wait_for(lambda: _stored(dsn) >= 16, 180, "two committed batches", proc)
        server.stop()  # fast shutdown: every connection is terminated, open batches roll back
        time.sleep(2.0)
        server.start()
        try:
            out, err = proc.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
    finally:
        if proc.poll() is None:
            proc.kill()
    worker_rc, worker_err = proc.returncode, err
    after_worker = _stored(dsn)

    # nothing committed before the restart was lost, and a rerun completes exactly once
    assert after_worker >= 16
    run_ingest(Database(dsn), MODEL, batch_size=32, loader_workers=0, device="cpu", progress=False)
    assert _stored(dsn) == total
    _assert_exactly_once_and_correct(dsn)

    # the guarantee itself: the worker survived the restart by reconnecting, and finished on its own
    frames = [
        ln.strip() for ln in worker_err.splitlines() if ln.strip().startswith('File "/work') or "Error" in ln
    ]
    assert worker_rc == 0, (
        "the ingest worker died on the database restart instead of reconnecting:\n" + "\n".join(frames[-8:])
    )
    assert after_worker == total


# --------------------------------------------------------------------------- interrupted import
def test_interrupted_then_rerun_import_equals_uninterrupted_import(
    db: str, template_db: str, clone_db, real_images: Path, tmp_path: Path
) -> None:
    root = tmp_path / "src"
    shutil.copytree(real_images, root)
    (root / "malignant" / "zz_corrupt.png").write_bytes(good_png(1)[:60] + b"\x00" * 40)
    (root / "benign_or_normal" / "zz_empty.png").write_bytes(b"")

    # reference: one uninterrupted import
    reference = db
    _import(reference, root)

    # the same import, killed after a few committed batches, then run again
    other = clone_db(template_db)
    proc = spawn_fault_worker("import", other, str(root), "breast", "16", "0.5")

    def images() -> int:
        with psycopg.connect(other) as c:
            return c.execute("select count(*) from cbir.image").fetchone()[0]

    kill_when(proc, lambda: images() >= 32, "two imported batches")
    partial = images()
    assert 32 <= partial < N_IMAGES, partial
    _wait_no_open_transactions(other)
    _import(other, root)

    a, b = canonical_dump(reference), canonical_dump(other)
    assert a.keys() == b.keys()
    for table in a:
        assert a[table] == b[table], (
            f"cbir.{table} differs between the interrupted and the uninterrupted import"
        )
    assert len(a["image"]) == N_IMAGES
    assert len(a["error"]) == 2
