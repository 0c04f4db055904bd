"""Imports that survive one bad row (issue 13).

- a 10,000-character label, a 6,000-character patient id, a 3,249-byte path and a file name that is not
  UTF-8 are each one recorded error naming the file; the rest of the import goes on and finishes;
- malformed MedMNIST ``.npz`` files (wrong keys, shapes, dtypes) are one clear line each;
- split fractions are validated (``nan``, negative, not summing to 1);
- a killed import leaves its dataset marked unfinished (``import_status = 'importing'``, ``imported_at``
  null); evaluation refuses it, naming it, until a rerun completes; every stored run records whether
  every image in its scope had a vector;
- the worker role records ingest failures only through ``cbir.record_ingest_failure_v1``, which sets the
  attempt count itself.
"""

from __future__ import annotations

import csv
import os
import shutil
import uuid
from pathlib import Path

import numpy as np
import psycopg
import pytest
from dbhelp import fetch_all, fetch_one
from psycopg import errors, sql
from relhelp import dsn_with, good_png, kill_when, spawn_fault_worker

from cbir_pg.db.database import Database
from cbir_pg.errors import CbirError, ConfigError

MODEL = "tiny_cnn"


def _errors(dsn: str, key: str) -> list[tuple[str, str, str]]:
    return fetch_all(
        dsn,
        "select coalesce(e.source, ''), e.reason, e.message from cbir.error e"
        " join cbir.dataset d on d.id = e.dataset_id where d.key = %s order by e.id",
        (key,),
    )


def _dataset(dsn: str, key: str) -> tuple[str, object, int]:
    return fetch_one(
        dsn,
        "select d.import_status, d.imported_at, (select count(*) from cbir.image i where i.dataset_id = d.id)"
        " from cbir.dataset d where d.key = %s",
        (key,),
    )


# --------------------------------------------------------------------------- oversized and undecodable fields
def test_oversized_fields_are_one_recorded_error_each_and_the_rest_imports(db: str, tmp_path: Path) -> None:
    from cbir_pg.datasets.importer import import_dataset

    root = tmp_path / "src"
    root.mkdir()
    rows = []
    for i in range(5):
        (root / f"good_{i}.png").write_bytes(good_png(500 + i))
        rows.append([f"good_{i}.png", "normal", f"p{i}"])
    for name in ("long_label.png", "long_patient.png"):
        (root / name).write_bytes(good_png(len(name)))
    # a real file whose path is over 3,249 bytes long (13 nested folders of 249 characters)
    deep = root
    for j in range(13):
        deep = deep / (chr(ord("a") + j) * 249)
    deep.mkdir(parents=True)
    (deep / "img.png").write_bytes(good_png(77))
    long_path = deep.relative_to(root).as_posix() + "/img.png"
    assert len(long_path.encode()) >= 3249
    rows += [
        ["long_label.png", "n" * 10_000, "p10"],
        ["long_patient.png", "normal", "P" * 6_000],
        [long_path, "normal", "p12"],
    ]
    manifest = root / "labels.csv"
    with open(manifest, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "patient"])
        w.writerows(rows)

    s = import_dataset(
        Database(db), "csv", manifest, name="oversized", modality="XR", region="chest", progress=False
    )
    assert s.imported == 5 and s.errors == {"field_too_long": 3}, s.errors
    errs = _errors(db, "oversized")
    assert {e[0][:40] for e in errs} == {"long_label.png", "long_patient.png", long_path[:40]}
    assert all(len(e[2]) < 2100 and "\n" not in e[2] for e in errs)
    assert _dataset(db, "oversized")[0] == "complete"


def test_a_file_name_that_is_not_utf8_is_one_recorded_error(db: str, tmp_path: Path) -> None:
    from cbir_pg.datasets.importer import import_dataset

    root = tmp_path / "folder"
    cls = root / "normal"
    cls.mkdir(parents=True)
    for i in range(4):
        (cls / f"good_{i}.png").write_bytes(good_png(600 + i))
    bad = os.fsdecode(b"caf\xe9_latin1.png")  # a Latin-1 name: not valid UTF-8
    (cls / bad).write_bytes(good_png(650))

    s = import_dataset(
        Database(db), "imagefolder", root, name="latin", modality="XR", region="chest", progress=False
    )
    assert s.imported == 4 and s.errors == {"bad_encoding": 1}, s.errors
    (err,) = _errors(db, "latin")
    assert err[1] == "bad_encoding" and "caf\\xe9_latin1.png" in err[0]
    assert _dataset(db, "latin")[0] == "complete"


# --------------------------------------------------------------------------- malformed .npz
def _npz(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


GOOD_IMAGES = np.zeros((6, 28, 28), dtype=np.uint8)
GOOD_LABELS = np.zeros((6, 1), dtype=np.int64)
MALFORMED = {
    "no_arrays": {"x": np.zeros(3)},
    "images_without_labels": {"train_images": GOOD_IMAGES},
    "labels_without_images": {"train_labels": GOOD_LABELS},
    "float_images": {"train_images": GOOD_IMAGES.astype(np.float32), "train_labels": GOOD_LABELS},
    "flat_images": {"train_images": np.zeros((6, 784), dtype=np.uint8), "train_labels": GOOD_LABELS},
    "label_count_mismatch": {"train_images": GOOD_IMAGES, "train_labels": GOOD_LABELS[:4]},
    "string_labels": {"train_images": GOOD_IMAGES, "train_labels": np.array([["a"]] * 6)},
    "five_channels": {"train_images": np.zeros((6, 28, 28, 5), dtype=np.uint8), "train_labels": GOOD_LABELS},
}


@pytest.mark.parametrize("kind", sorted(MALFORMED))
def test_malformed_npz_is_one_clear_line(db: str, tmp_path: Path, kind: str) -> None:
    from cbir_pg.datasets.importer import import_dataset

    path = _npz(tmp_path / "breastmnist_bad.npz", **MALFORMED[kind])
    with pytest.raises(CbirError) as info:
        import_dataset(Database(db), "medmnist", path, name=f"npz_{kind}", progress=False)
    msg = str(info.value)
    assert "\n" not in msg and path.name in msg, msg


def test_a_valid_small_npz_still_imports(db: str, tmp_path: Path) -> None:
    from cbir_pg.datasets.importer import import_dataset

    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (6, 28, 28, 1), dtype=np.uint8)
    path = _npz(tmp_path / "breastmnist_ok.npz", train_images=imgs, train_labels=np.array([0, 1] * 3))
    s = import_dataset(Database(db), "medmnist", path, name="npz_ok", progress=False)
    assert s.imported == 6 and not s.errors


# --------------------------------------------------------------------------- split fractions
@pytest.mark.parametrize(
    "text", ["nan,0.5,0.5", "0.7,nan,0.3", "inf,0,0", "-0.1,0.6,0.5", "0.5,0.5,0.5", "0.7,0.1", "a,b,c"]
)
def test_bad_split_fractions_are_refused(db: str, tmp_path: Path, text: str) -> None:
    from cbir_pg.datasets.importer import import_dataset
    from cbir_pg.datasets.splits import parse_fractions

    with pytest.raises(ConfigError) as info:
        parse_fractions(text)
    assert "\n" not in str(info.value)
    root = tmp_path / "folder" / "normal"
    root.mkdir(parents=True)
    (root / "a.png").write_bytes(good_png(1))
    with pytest.raises(ConfigError):
        import_dataset(
            db, "imagefolder", root.parent, name="fractions", modality="XR", region="chest",
            fractions=text, progress=False,
        )  # fmt: skip
    with psycopg.connect(db) as c:
        assert c.execute("select count(*) from cbir.image").fetchone()[0] == 0


# --------------------------------------------------------------------------- a killed import
def _folder(root: Path, n: int) -> Path:
    for i in range(n):
        cls = root / ("malignant" if i % 3 == 0 else "normal")
        cls.mkdir(parents=True, exist_ok=True)
        (cls / f"img_{i:04d}.png").write_bytes(good_png(1000 + i))
    return root


def test_a_killed_import_is_marked_unfinished_and_kept_out_of_evaluation(db: str, tmp_path: Path) -> None:
    from cbir_pg.datasets.importer import import_dataset
    from cbir_pg.eval.retrieval import evaluate_retrieval
    from cbir_pg.ingest.worker import run_ingest

    root = _folder(tmp_path / "src", 120)
    proc = spawn_fault_worker("import", db, str(root), "breast", "16", "0.5")

    kill_when(proc, lambda: fetch_one(db, "select count(*) from cbir.image")[0] >= 32, "two imported batches")

    status, imported_at, images = _dataset(db, "breast")
    assert status == "importing" and imported_at is None and 32 <= images < 120
    run_ingest(Database(db), MODEL, batch_size=32, loader_workers=0, device="cpu", progress=False)
    with pytest.raises(ConfigError) as info:
        evaluate_retrieval(
            Database(db), MODEL, index_splits=("train", "val"), query_splits=("test",), progress=False
        )
    assert "breast" in str(info.value) and "import" in str(info.value)
    with pytest.raises(ConfigError):
        evaluate_retrieval(Database(db), MODEL, datasets=["breast"], progress=False)
    with psycopg.connect(db) as c:
        assert c.execute("select count(*) from cbir.eval_run").fetchone()[0] == 0

    # a rerun completes the import; evaluation then runs and records that not every image has a vector
    import_dataset(
        Database(db), "imagefolder", root, name="breast", modality="US", region="breast", progress=False
    )
    status, imported_at, images = _dataset(db, "breast")
    assert status == "complete" and imported_at is not None and images == 120
    r1 = evaluate_retrieval(Database(db), MODEL, index_splits=("train", "val"), progress=False)
    run_ingest(Database(db), MODEL, batch_size=32, loader_workers=0, device="cpu", progress=False)
    r2 = evaluate_retrieval(Database(db), MODEL, index_splits=("train", "val"), progress=False)
    with psycopg.connect(db) as c:
        cov = dict(c.execute("select id, all_embedded from cbir.eval_run").fetchall())
        shown = dict(c.execute("select run_id, all_embedded from cbir_report.eval_runs").fetchall())
    assert cov[r1.primary.run_id] is False and cov[r2.primary.run_id] is True
    assert shown == cov  # BI tools see the coverage too


# --------------------------------------------------------------------------- the worker and ingest_failure
@pytest.fixture
def worker_dsn(db: str, pg_server_dsn: str):
    name = f"t_w_{uuid.uuid4().hex[:8]}"
    password = uuid.uuid4().hex  # every role but the superuser logs in with scram-sha-256
    with psycopg.connect(pg_server_dsn, autocommit=True) as c:
        c.execute(
            sql.SQL("create role {} login password {} in role cbir_worker").format(
                sql.Identifier(name), sql.Literal(password)
            )
        )
    yield dsn_with(db, user=name, password=password)
    with psycopg.connect(db, autocommit=True) as c:
        c.execute(sql.SQL("drop owned by {}").format(sql.Identifier(name)))
    with psycopg.connect(pg_server_dsn, autocommit=True) as c:
        c.execute(sql.SQL("drop role if exists {}").format(sql.Identifier(name)))


def test_the_worker_cannot_set_its_own_attempt_count(db: str, worker_dsn: str, tmp_path: Path) -> None:
    from cbir_pg.datasets.importer import import_dataset
    from cbir_pg.db.connect import connect
    from cbir_pg.encoders import get_config
    from cbir_pg.ingest.worker import ensure_encoder_table

    import_dataset(Database(db), "imagefolder", _folder(tmp_path / "w", 4), name="wf", modality="US", region="breast",
                   progress=False)  # fmt: skip
    with connect(db) as conn:
        ensure_encoder_table(conn, get_config(MODEL))
    with psycopg.connect(db) as c:
        image_id = c.execute("select min(id) from cbir.image").fetchone()[0]

    for statement in (
        "insert into cbir.ingest_failure (encoder_key, image_id, attempts, last_error)"
        " values ('tiny_cnn', %(id)s, 1000000, 'x')",
        "update cbir.ingest_failure set attempts = 1000000",
        "delete from cbir.ingest_failure",
    ):
        with psycopg.connect(worker_dsn) as c, pytest.raises(errors.InsufficientPrivilege):
            c.execute(statement, {"id": image_id})

    # through the function: one attempt per transaction, however often it is called in it
    with psycopg.connect(worker_dsn) as c:
        got = [
            c.execute(
                "select cbir.record_ingest_failure_v1('tiny_cnn', %s, 'decode failed')", (image_id,)
            ).fetchone()[0]
            for _ in range(50)
        ]
    assert got == [1] * 50
    with psycopg.connect(worker_dsn) as c:
        assert (
            c.execute(
                "select cbir.record_ingest_failure_v1('tiny_cnn', %s, 'again')", (image_id,)
            ).fetchone()[0]
            == 2
        )
    with psycopg.connect(db) as c:
        assert c.execute("select attempts from cbir.ingest_failure").fetchall() == [(2,)]
    shutil.rmtree(tmp_path / "w", ignore_errors=True)
