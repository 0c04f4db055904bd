"""Ingest end to end on the real MedMNIST images: exactly once, unit norms, failures, config hash,
status view, the CLI, and EfficientNet-Lite0 with its real weights on the whole benchmark."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from conftest import require_data
from ingest_seed import seed_medmnist

from cbir_pg.db.database import Database

pytestmark = pytest.mark.real_data


def _arr(v) -> np.ndarray:
    return np.asarray(v.to_numpy() if hasattr(v, "to_numpy") else v, np.float32)


def _vectors(dsn: str, key: str) -> tuple[np.ndarray, np.ndarray]:
    from cbir_pg.db.connect import connect

    with connect(dsn) as conn:
        rows = conn.execute(
            f"select image_id, embedding from cbir.embedding_{key} order by image_id"
        ).fetchall()
    return np.array([r[0] for r in rows]), np.stack([_arr(r[1]) for r in rows])


def _image_ids(dsn: str) -> list[int]:
    from cbir_pg.db.connect import connect

    with connect(dsn) as conn:
        return [r[0] for r in conn.execute("select id from cbir.image where not excluded order by id")]


def test_tiny_encoder_embeds_every_image_once_with_unit_norm(db, tmp_path, caplog):
    import logging

    from cbir_pg.ingest import ingest_status, run_ingest

    data = require_data()
    n = seed_medmnist(db, data, tmp_path, flags=("breastmnist", "pneumoniamnist"), per_split=60)
    with caplog.at_level(logging.INFO, logger="cbir_pg"):
        s = run_ingest(
            Database(db), "tiny_cnn", batch_size=32, device="cpu", loader_workers=2, progress=False
        )
    assert s.embedded == n and s.failed == 0 and s.remaining == 0 and s.done == n
    # standard logging: a start line, one line per batch (model, worker pid, counts), an end line
    batch_lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("batch ")]
    assert len(batch_lines) == s.batches and "model=tiny_cnn" in batch_lines[0]
    assert any(r.getMessage().startswith("worker done model=tiny_cnn") for r in caplog.records)
    ids, vecs = _vectors(db, "tiny_cnn")
    assert sorted(ids.tolist()) == _image_ids(db)  # every image, exactly once (primary key + equality)
    assert vecs.shape == (n, 16)
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    # a rerun finds nothing to do
    again = run_ingest(
        Database(db), "tiny_cnn", batch_size=32, device="cpu", loader_workers=0, progress=False
    )
    assert again.embedded == 0 and again.done == n
    rows = {(r.encoder, r.dataset): r for r in ingest_status(Database(db))}
    assert rows[("tiny_cnn", "breastmnist")].done == 180 and rows[("tiny_cnn", "breastmnist")].pending == 0
    assert rows[("tiny_cnn", "pneumoniamnist")].total == 180


def test_two_spawned_processes_embed_every_image_once(db, tmp_path):
    """``processes=2``: two spawned workers (each its own encoder) share the claims; every image is
    embedded once, and the summary adds up what both did."""
    from cbir_pg.ingest import run_ingest

    n = seed_medmnist(db, require_data(), tmp_path, flags=("breastmnist",), per_split=40)
    s = run_ingest(
        Database(db), "tiny_cnn", batch_size=16, device="cpu", loader_workers=0, processes=2, progress=False
    )
    assert s.processes == 2 and s.embedded == n and s.failed == 0 and s.done == n
    assert s.batches >= n // 16  # the children ran with this batch size (the default is 64)
    ids, vecs = _vectors(db, "tiny_cnn")
    assert sorted(ids.tolist()) == _image_ids(db)
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)


def test_selection_limit_and_vectors_match_the_encoder(db, tmp_path):
    from cbir_pg.encoders import create_encoder, embed_arrays
    from cbir_pg.images import decode_file
    from cbir_pg.ingest import ingest_status, run_ingest

    seed_medmnist(db, require_data(), tmp_path, flags=("breastmnist", "pneumoniamnist"), per_split=20)
    s = run_ingest(
        Database(db),
        "tiny_vit",
        datasets=["breastmnist"],
        splits=["test"],
        batch_size=8,
        loader_workers=0,
        device="cpu",
        progress=False,
    )
    assert s.embedded == 20 and s.done == 20
    status = {r.dataset: r for r in ingest_status(Database(db), "tiny_vit")}
    assert status["pneumoniamnist"].done == 0 and status["pneumoniamnist"].pending == 60
    assert status["breastmnist"].done == 20 and status["breastmnist"].pending == 40
    # the stored vector equals the library's embedding of the decoded file
    ids, vecs = _vectors(db, "tiny_vit")
    from cbir_pg.db.connect import connect

    with connect(db) as conn:
        root, uri = conn.execute(
            "select d.root, i.uri from cbir.image i join cbir.dataset d on d.id = i.dataset_id where i.id = %s",
            (int(ids[3]),),
        ).fetchone()
    ref = embed_arrays(create_encoder("tiny_vit"), [decode_file(f"{root}/{uri}")])[0]
    assert np.allclose(vecs[3], ref, atol=1e-5)
    lim = run_ingest(
        Database(db), "tiny_vit", limit=25, batch_size=10, loader_workers=0, device="cpu", progress=False
    )
    assert lim.embedded == 25 and lim.done == 45


def test_failed_images_are_recorded_retried_and_never_block(db, tmp_path):
    from cbir_pg.db.connect import connect
    from cbir_pg.ingest import ingest_status, run_ingest

    n = seed_medmnist(db, require_data(), tmp_path, flags=("breastmnist",), per_split=10)
    (tmp_path / "breastmnist" / "train" / "00003.png").write_bytes(b"not a png")
    (tmp_path / "breastmnist" / "val" / "00001.png").unlink()
    s = run_ingest(
        Database(db), "tiny_cnn", batch_size=4, loader_workers=1, device="cpu", max_attempts=2, progress=False
    )
    assert s.embedded == n - 2 and s.remaining == 0
    assert s.failed == 4  # two bad images x two attempts
    with connect(db) as conn:
        fails = conn.execute(
            "select attempts, last_error from cbir.ingest_failure order by image_id"
        ).fetchall()
        errors = conn.execute("select stage, reason from cbir.error order by id").fetchall()
    assert [f[0] for f in fails] == [2, 2]
    assert {r for _, r in errors} == {"not_an_image", "missing_file"} and all(
        st == "decode" for st, _ in errors
    )
    row = ingest_status(Database(db), "tiny_cnn")[0]
    assert (row.total, row.done, row.failed, row.pending) == (n, n - 2, 2, 0)
    # over the limit: a rerun does not try again
    assert (
        run_ingest(
            Database(db), "tiny_cnn", max_attempts=2, loader_workers=0, device="cpu", progress=False
        ).failed
        == 0
    )


def test_mismatched_config_hash_is_refused(db, tmp_path):
    from cbir_pg.db.connect import connect
    from cbir_pg.errors import ConfigError
    from cbir_pg.ingest import run_ingest

    seed_medmnist(db, require_data(), tmp_path, flags=("breastmnist",), per_split=5)
    run_ingest(Database(db), "tiny_cnn", loader_workers=0, device="cpu", progress=False)
    with connect(db) as conn:
        stored = conn.execute("select config_hash from cbir.encoder where key = 'tiny_cnn'").fetchone()[0]
        comment = conn.execute(
            "select obj_description('cbir.embedding_tiny_cnn'::regclass, 'pg_class')"
        ).fetchone()[0]
        assert stored in comment
        conn.execute("update cbir.encoder set config_hash = 'deadbeef' || config_hash where key = 'tiny_cnn'")
        conn.commit()
    with pytest.raises(ConfigError, match="deadbeef"):
        run_ingest(Database(db), "tiny_cnn", loader_workers=0, device="cpu", progress=False)
    # the encoder row gone, the table's comment still guards it
    with connect(db) as conn:
        conn.execute(
            "comment on table cbir.embedding_tiny_cnn is 'cbir-pg encoder tiny_cnn config_hash=0123abcd'"
        )
        conn.execute("delete from cbir.encoder where key = 'tiny_cnn'")
        conn.commit()
    with pytest.raises(ConfigError, match="0123abcd"):
        run_ingest(Database(db), "tiny_cnn", loader_workers=0, device="cpu", progress=False)


def test_unknown_model_and_dataset_are_clear_errors(db):
    from cbir_pg.errors import NotFoundError
    from cbir_pg.ingest import run_ingest

    with pytest.raises(NotFoundError, match="unknown encoder 'nope'"):
        run_ingest(Database(db), "nope", progress=False)
    with pytest.raises(NotFoundError, match="unknown dataset"):
        run_ingest(Database(db), "tiny_cnn", datasets=["missing"], progress=False)


def test_cli_ingest_and_status(db, tmp_path):
    n = seed_medmnist(db, require_data(), tmp_path, flags=("breastmnist",), per_split=8)
    cmd = [sys.executable, "-m", "cbir_pg", "--dsn", db]
    r = subprocess.run(
        [*cmd, "ingest", "--model", "tiny_cnn", "--device", "cpu", "-w", "0", "-b", "5"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert f"embedded {n} images" in r.stdout and "img/s" in r.stdout
    assert "img" in r.stderr and "100%" in r.stderr  # the progress bar
    r = subprocess.run([*cmd, "ingest", "status"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "tiny_cnn" in r.stdout and "breastmnist" in r.stdout and str(n) in r.stdout
    r = subprocess.run(
        [*cmd, "ingest", "--model", "resnet50", "--device", "cpu"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "microsoft/resnet-50" in r.stderr


# --------------------------------------------------------------------------- real weights, real images
# The session's shared real-data database (tests/conftest.py: medmnist_lite0_template): the combined
# BreastMNIST + PneumoniaMNIST benchmark imported by the real importer and embedded once with
# efficientnet_lite0 on the CPU; tests/db/test_real_medmnist.py checks the full fill.


@pytest.fixture
def lite0_db(medmnist_lite0_db):
    return medmnist_lite0_db, None, None


@pytest.mark.slow
@pytest.mark.real_data
def test_efficientnet_lite0_retrieval_beats_majority_and_differs_from_random(lite0_db):
    from cbir_pg.db.connect import connect
    from cbir_pg.encoders import create_encoder, embed_arrays
    from cbir_pg.images import decode_file

    dsn, _, _ = lite0_db
    with connect(dsn) as conn:
        rows = conn.execute(
            "select e.embedding, i.label_id, d.root || '/' || i.uri from cbir.embedding_efficientnet_lite0 e"
            " join cbir.image i on i.id = e.image_id join cbir.dataset d on d.id = i.dataset_id order by i.id"
        ).fetchall()
    vecs = np.stack([_arr(r[0]) for r in rows])
    labels = np.array([r[1] for r in rows])
    # leave-one-out nearest neighbour by cosine similarity, scored by label
    sims = vecs @ vecs.T
    np.fill_diagonal(sims, -np.inf)
    p_at_1 = float((labels[sims.argmax(axis=1)] == labels).mean())
    _, counts = np.unique(labels, return_counts=True)
    majority = counts.max() / counts.sum()
    assert len(counts) == 4
    assert p_at_1 > majority + 0.1, (p_at_1, majority)
    # the real weights matter: a random-initialised lite0 embeds the same images differently
    arrays = [decode_file(r[2]) for r in rows[:4]]
    rand = embed_arrays(create_encoder("efficientnet_lite0", pretrained=False), arrays)
    real = embed_arrays(create_encoder("efficientnet_lite0"), arrays)
    # ingest resizes on the device (torch), the reference with PIL: about one grey level apart
    # (tests/unit/test_device_preprocess.py), so the vectors agree closely, not bit for bit
    assert np.allclose(real, vecs[:4], atol=5e-3)
    assert float((real * vecs[:4]).sum(axis=1).min()) > 0.999
    assert np.abs(rand - real).max() > 0.1
