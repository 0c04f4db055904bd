"""Real data: the two shared MedMNIST files as one combined, harmonised benchmark."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import medmnist_file

from cbir_pg.datasets import dataset_overview, import_dataset, import_medmnist_benchmark, label_overview
from cbir_pg.db.database import Database

pytestmark = pytest.mark.real_data


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("CBIR_PG_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def _check_labels(db: str, conn, medmnist_dir: Path) -> None:
    """The four classes with their kinds, the malignant count of the arrays, both modalities."""
    labels = {lab.key: lab for lab in label_overview(Database(db))}
    assert set(labels) == {
        "US/breast/malignant",
        "US/breast/benign_or_normal",
        "XR/chest/normal",
        "XR/chest/pneumonia",
    }
    assert (
        labels["XR/chest/pneumonia"].kind == "pathological"
        and labels["US/breast/benign_or_normal"].kind == "anatomical"
    )
    b = np.load(medmnist_dir / "breastmnist.npz")
    n_malignant = sum(int((b[f"{sp}_labels"].ravel() == 0).sum()) for sp in ("train", "val", "test"))
    assert labels["US/breast/malignant"].images == n_malignant
    modalities = conn.execute(
        "select array_agg(distinct modality order by modality) from cbir.image"
    ).fetchone()[0]
    assert modalities == ["US", "XR"]


def _check_files_and_duplicates(conn, summaries) -> None:
    """The PNGs exist, are named by their pixel hash and hash to the same pixels as the arrays; exact
    duplicates in the real arrays are flagged, never deleted, and counted."""
    root = conn.execute("select root from cbir.dataset where key = 'breastmnist'").fetchone()[0]
    from cbir_pg.images import decode_file, pixel_hash

    uri, h = conn.execute(
        "select uri, content_hash from cbir.image i join cbir.dataset d on d.id = i.dataset_id "
        "where d.key = 'breastmnist' and uri like 'test/000007.%%.png'"
    ).fetchone()
    assert uri == f"test/000007.{h}.png"
    assert pixel_hash(decode_file(f"{root}/{uri}")) == h

    # exact duplicates in the real arrays are flagged, never deleted, and counted
    n_dup = conn.execute("select count(*) from cbir.image where exclusion_reason = 'duplicate'").fetchone()[0]
    assert n_dup == sum(s.exact_duplicates for s in summaries) > 0
    kept = conn.execute(
        "select count(*) from cbir.image d join cbir.image k on k.id = d.duplicate_of "
        "where d.exclusion_reason = 'duplicate' and k.content_hash = d.content_hash and not k.excluded"
    ).fetchone()[0]
    assert kept == n_dup


def test_medmnist_benchmark_imports_and_reimport_is_noop(db, conn, medmnist_dir, home):
    summaries = import_medmnist_benchmark(Database(db), medmnist_dir, progress=False)
    by_key = {s.dataset: s for s in summaries}
    sizes = {}
    for key in ("breastmnist", "pneumoniamnist"):
        arrays = np.load(medmnist_file(medmnist_dir, key))
        sizes[key] = {sp: int(arrays[f"{sp}_labels"].shape[0]) for sp in ("train", "val", "test")}
        s = by_key[key]
        assert s.error_count == 0
        assert s.splits == {sp: int(arrays[f"{sp}_labels"].shape[0]) for sp in ("train", "val", "test")}
        assert s.imported == s.images == sum(s.splits.values())
    assert by_key["breastmnist"].images == 780
    # the shared subset (5,030 images) or the full release (5,856)
    assert by_key["pneumoniamnist"].images in (5030, 5856)
    _check_labels(db, conn, medmnist_dir)
    _check_files_and_duplicates(conn, summaries)

    before = conn.execute("select count(*), count(*) filter (where excluded) from cbir.image").fetchone()
    again = import_medmnist_benchmark(Database(db), medmnist_dir, progress=False)
    assert [s.imported for s in again] == [0, 0]
    assert [s.skipped_existing for s in again] == [780, by_key["pneumoniamnist"].images]
    after = conn.execute("select count(*), count(*) filter (where excluded) from cbir.image").fetchone()
    assert before == after

    overview = {d.key: d for d in dataset_overview(Database(db))}
    assert overview["pneumoniamnist"].splits == sizes["pneumoniamnist"]
    assert sizes["pneumoniamnist"]["test"] == 624 and sizes["pneumoniamnist"]["val"] == 524
    assert overview["breastmnist"].exclusions == by_key["breastmnist"].excluded


def test_medmnist_flag_defaults_to_key(db, medmnist_dir, home):
    s = import_dataset(Database(db), "medmnist", medmnist_dir / "breastmnist.npz", progress=False)
    assert s.dataset == "breastmnist" and s.images == 780
    assert len(list((home / "images" / "breastmnist" / "train").glob("000000.*.png"))) == 1
