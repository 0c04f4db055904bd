"""The paper profile and the published embeddings: CheXpert's published row filter, no dedupe, runs that
record their profile, and ``embeddings import-h5`` on HDF5 files in the published layout, whose exact
evaluation equals an independent NumPy reference of the published P@N."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from datasets_fixtures import CHEXPERT_HEADER, _onehot, img, write_chexpert, write_csv, write_radimagenet

from cbir_pg.datasets import import_dataset
from cbir_pg.db.database import Database
from cbir_pg.errors import ConfigError, InputError

# ----------------------------------------------------------------------------- datasets


def _published_chexpert_kept(base: Path) -> set[str]:
    """scripts/prepare_datasets/CheXpert/prepare_CheXpert.py's row filter, with pandas as it is written."""
    import pandas as pd

    def split_filter(df):  # split_train_val (train.csv only)
        df = df.fillna(0.0).drop(["Support Devices"], axis=1)
        return df[df[df.columns[5:]].sum(axis=1) == 1]

    def prepare(df):
        lab = df.columns[5:]
        df[lab] = df[lab].astype(float)
        df[lab] = df[lab].where(df[lab] >= 1, np.nan)
        df = df.fillna(0.0)
        if "Support Devices" in df.columns:
            df = df.drop(["Support Devices"], axis=1)
        return df[df[df.columns[5:]].sum(axis=1) == 1]

    train = prepare(split_filter(pd.read_csv(base / "train.csv")))
    test = prepare(pd.read_csv(base / "valid.csv"))
    return set(train["Path"]) | set(test["Path"])


def test_chexpert_paper_profile_keeps_the_published_rows(db, conn, tmp_path):
    root = write_chexpert(tmp_path)
    base = root / "CheXpert-v1.0"
    extra = [  # the cases that separate the rules: uncertain with one or two positives, uncertain devices
        (
            "train/patient00004/study1/view1_frontal.jpg",
            {"Pneumonia": 1.0, "Edema": -1.0, "Cardiomegaly": 1.0},
        ),
        ("train/patient00004/study2/view1_frontal.jpg", {"Pneumonia": -1.0}),
        ("train/patient00005/study1/view1_frontal.jpg", {"Support Devices": -1.0, "Atelectasis": 1.0}),
        ("train/patient00005/study2/view1_frontal.jpg", {"Edema": 1.0, "Pneumonia": 1.0, "Fracture": -1.0}),
        ("train/patient00006/study1/view1_frontal.jpg", {"No Finding": 1.0, "Lung Lesion": -1.0}),
    ]
    import csv

    with open(base / "train.csv", newline="") as fh:
        rows = list(csv.reader(fh))[1:]
    for i, (p, vals) in enumerate(extra):
        img(base / p, 500 + i)
        rows.append([f"CheXpert-v1.0/{p}", "Male", 50, "Frontal", "AP", *_onehot(vals)])
    write_csv(base / "train.csv", CHEXPERT_HEADER, rows)

    s = import_dataset(Database(db), "chexpert", root, profile="paper", progress=False)
    kept = {
        r[0]
        for r in conn.execute(
            "select uri from cbir.image i join cbir.dataset d on d.id = i.dataset_id"
            " where d.key = 'chexpert' and not i.excluded"
        )
    }
    expected = _published_chexpert_kept(base)
    assert kept == expected and len(expected) == 6
    assert s.excluded.get("uncertain_label", 0) == 5
    params = conn.execute("select params from cbir.dataset where key = 'chexpert'").fetchone()[0]
    assert params["profile"] == "paper" and params["dedupe"] == "none"
    assert params["options"]["uncertain"] == "exclude"

    # the default profile (U-Zeros) keeps more rows, e.g. the uncertain-edema pneumonia
    s0 = import_dataset(Database(db), "chexpert", root, name="chexpert_zeros", progress=False)
    assert s0.images == s.images and "uncertain_label" not in s0.excluded


def test_paper_profile_flags_no_duplicates(db, conn, tmp_path):
    root = write_radimagenet(tmp_path)
    s = import_dataset(Database(db), "radimagenet", root, profile="paper", progress=False)
    assert s.exact_duplicates == 0 and "duplicate" not in s.excluded
    s = import_dataset(
        Database(db), "radimagenet", root, progress=False
    )  # default: the copy is flagged again
    assert s.exact_duplicates == 1 and s.excluded.get("duplicate") == 1
    s = import_dataset(Database(db), "radimagenet", root, dedupe="none", progress=False)  # and cleared
    assert s.exact_duplicates == 0 and "duplicate" not in s.excluded
    with pytest.raises(ConfigError, match="--dedupe"):
        import_dataset(Database(db), "radimagenet", root, dedupe="fuzzy", progress=False)
    with pytest.raises(ConfigError, match="profile"):
        import_dataset(Database(db), "radimagenet", root, profile="papers", progress=False)


# ----------------------------------------------------------------------------- published embeddings

LABELS = ["CT/abdomen/liver_lesion", "XR/chest/normal", "XR/chest/pneumonia"]


def _published_layout(root: Path, n: int = 90, seed: int = 0) -> tuple[Path, dict[str, tuple[str, str]]]:
    """A dkfz-splits CSV over ``n`` images in nested folders, and its rows: filepath -> (split, label)."""
    rng = np.random.default_rng(seed)
    rows, truth = [], {}
    for i in range(n):
        label = LABELS[int(rng.integers(0, 3))]
        split = ["train", "train", "val", "test"][i % 4]
        src = "radimagenet" if label.startswith("CT") else "nih14"
        fp = f"{src}/images_{i % 3:03d}/sub/{i:05d}.png"
        img(root / fp, 1000 + i)
        rows.append(
            [fp, src, split, label.split("/")[0], label.split("/")[1], *[int(x == label) for x in LABELS]]
        )
        truth[fp] = (split, label)
    csv_path = write_csv(
        root / "dkfz_splits.csv",
        ["filepath", "dataset", "split", "modality", "anatomic_region", *LABELS],
        rows,
    )
    return csv_path, truth


def _write_h5(path: Path, vectors: dict[str, np.ndarray]) -> Path:
    """As create_embeddings.py: ``h5f.create_dataset(filepath, data=unit_vector)`` (paths become groups)."""
    import h5py

    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as h5f:
        for k, v in vectors.items():
            h5f.create_dataset(k, data=v)
    return path


def _unit(rng, n: int, dim: int) -> np.ndarray:
    v = rng.normal(size=(n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _reference_p_at_n(vectors, truth, ns):
    """src/evaluation/evaluate_retrieval.py in NumPy: test queries, train index, inner-product top-k,
    n = min(N, the class's index count), micro = mean over queries, macro = mean of class means."""
    index = [k for k, (s, _) in truth.items() if s == "train"]
    queries = [k for k, (s, _) in truth.items() if s == "test"]
    X = np.stack([vectors[k] for k in index]).astype(np.float64)
    ilab = np.array([truth[k][1] for k in index])
    counts = {lab: int((ilab == lab).sum()) for lab in LABELS}
    micro, macro = [], []
    for N in ns:
        per_query, per_class = [], {}
        for q in queries:
            lab = truth[q][1]
            order = np.argsort(-(X @ vectors[q].astype(np.float64)), kind="stable")
            n = min(N, counts[lab])
            p = float(np.sum(ilab[order[:n]] == lab)) / n
            per_query.append(p)
            per_class.setdefault(lab, []).append(p)
        micro.append(np.mean(per_query))
        macro.append(np.mean([np.mean(v) for v in per_class.values()]))
    return np.array(micro), np.array(macro)


def test_import_h5_exact_retrieval_equals_the_published_p_at_n(db, conn, tmp_path):
    from cbir_pg.eval.retrieval import evaluate_retrieval
    from cbir_pg.ingest.h5 import import_h5

    csv_path, truth = _published_layout(tmp_path / "data")
    s = import_dataset(Database(db), "dkfz-splits", csv_path, profile="paper", progress=False)
    assert s.images == 90 and not s.excluded
    rng = np.random.default_rng(7)
    vecs = dict(zip(truth, _unit(rng, len(truth), 512), strict=True))
    h5_dir = tmp_path / "embeddings" / "BiomedCLIPVitB16_224"
    by_source: dict[str, dict[str, np.ndarray]] = {}
    for k, v in vecs.items():
        by_source.setdefault(k.split("/")[0], {})[k] = v
    _write_h5(h5_dir / "nih14.h5", by_source["nih14"])
    extra = dict(by_source["radimagenet"], **{"radimagenet/not_in_the_csv.png": _unit(rng, 1, 512)[0]})
    _write_h5(h5_dir / "radiology_ai.h5", extra)

    summary = import_h5(Database(db), h5_dir, "biomedclip")
    assert summary.loaded == 90 and summary.unmatched == 1
    assert {f.file for f in summary.files} == {"nih14.h5", "radiology_ai.h5"}
    stored = dict(
        conn.execute(
            "select i.uri, e.embedding from cbir.embedding_biomedclip e join cbir.image i on i.id = e.image_id"
        ).fetchall()
    )
    assert len(stored) == 90
    assert all(np.array_equal(np.asarray(stored[k].to_numpy(), np.float32), v) for k, v in vecs.items())
    enc = conn.execute("select config, config_hash from cbir.encoder where key = 'biomedclip'").fetchone()
    assert enc[0]["weights_source"].startswith("import:h5:")
    assert [f["file"] for f in enc[0]["imported_files"]] == ["nih14.h5", "radiology_ai.h5"]
    from cbir_pg.encoders import get_config

    assert enc[1] != get_config("biomedclip").config_hash()

    ns = (1, 3, 5, 10)
    res = evaluate_retrieval(Database(db), "biomedclip", ns=ns, mode="exact", profile="paper", progress=False)
    micro, macro = _reference_p_at_n(vecs, truth, ns)
    np.testing.assert_allclose(res.primary.summary.micro, micro, atol=1e-12)
    np.testing.assert_allclose(res.primary.summary.macro, macro, atol=1e-12)
    assert not res.warnings
    board = conn.execute(
        "select profile, vectors, mode, p1_micro, p10_macro from cbir_report.leaderboard where model = 'biomedclip'"
    ).fetchall()
    # the view rounds to 4 decimals, as a dashboard shows them; the stored run is exact (above)
    assert board == [
        ("paper", "imported", "exact", pytest.approx(micro[0], abs=5e-5), pytest.approx(macro[-1], abs=5e-5))
    ]
    params = conn.execute("select params from cbir.eval_run where id = %s", (res.primary.run_id,)).fetchone()[
        0
    ]
    assert params["profile"] == "paper" and params["vectors"] == "imported"
    assert params["imported_files"] == [f.sha256 for f in summary.files]

    # a second import of the same files replaces the vectors, nothing twice
    assert import_h5(Database(db), h5_dir, "biomedclip").loaded == 90
    assert conn.execute("select count(*) from cbir.embedding_biomedclip").fetchone()[0] == 90

    # the paper profile refuses a protocol that is not the paper's
    with pytest.raises(ConfigError, match="--profile paper"):
        evaluate_retrieval(Database(db), "biomedclip", mode="ann", profile="paper", progress=False)


def test_import_h5_checks_dimension_norm_and_never_mixes(db, conn, tmp_path):
    from cbir_pg.ingest.h5 import import_h5
    from cbir_pg.ingest.worker import ensure_encoder_table

    csv_path, truth = _published_layout(tmp_path / "data", n=12)
    import_dataset(Database(db), "dkfz-splits", csv_path, profile="paper", progress=False)
    rng = np.random.default_rng(1)
    keys = list(truth)
    wrong_dim = _write_h5(tmp_path / "dim" / "nih14.h5", dict(zip(keys, _unit(rng, 12, 256), strict=True)))
    with pytest.raises(InputError, match="dimension is 512"):
        import_h5(Database(db), wrong_dim, "biomedclip")
    raw = _unit(rng, 12, 512)
    raw[3] *= 2.0
    not_unit = _write_h5(tmp_path / "norm" / "nih14.h5", dict(zip(keys, raw, strict=True)))
    with pytest.raises(InputError, match="not unit length.*norm 2"):
        import_h5(Database(db), not_unit, "biomedclip")
    # a failed run changes nothing: not even the table or the encoder row (issue 22)
    assert conn.execute("select to_regclass('cbir.embedding_biomedclip')").fetchone()[0] is None

    good = _write_h5(tmp_path / "good" / "x.h5", dict(zip(keys, _unit(rng, 12, 512), strict=True)))
    assert import_h5(Database(db), good, "biomedclip").loaded == 12
    from cbir_pg.encoders import get_config

    # computed vectors may not join an imported table ...
    with pytest.raises(ConfigError, match="must not mix"):
        ensure_encoder_table(conn, get_config("biomedclip"))
    # ... and imported vectors may not join a table of computed ones
    conn.rollback()
    ensure_encoder_table(conn, get_config("tiny_cnn"))
    with pytest.raises(ConfigError, match="must not mix"):
        import_h5(Database(db), good, "tiny_cnn")
    with pytest.raises(ConfigError, match="no .h5"):
        import_h5(Database(db), tmp_path / "data", "biomedclip")


def test_cli_import_h5_and_paper_retrieval(db, tmp_path):
    from typer.testing import CliRunner

    from cbir_pg.app.cli import app

    csv_path, truth = _published_layout(tmp_path / "data", n=40)
    runner = CliRunner()
    out = runner.invoke(
        app, ["--dsn", db, "datasets", "import", "dkfz-splits", str(csv_path), "--profile", "paper", "-q"]
    )
    assert out.exit_code == 0, out.output
    rng = np.random.default_rng(2)
    h5 = _write_h5(tmp_path / "emb" / "nih14.h5", dict(zip(truth, _unit(rng, 40, 512), strict=True)))
    out = runner.invoke(
        app, ["--dsn", db, "embeddings", "import-h5", str(h5.parent), "--model", "biomedclip"]
    )
    assert out.exit_code == 0, out.output
    assert "40 of 40 vectors loaded" in out.output
    out = runner.invoke(
        app,
        ["--dsn", db, "eval", "retrieval", "--model", "biomedclip", "--profile", "paper", "--no-progress"],
    )
    assert out.exit_code == 0, out.output
    assert "profile paper" in out.output and "exact" in out.output
    out = runner.invoke(app, ["--dsn", db, "eval", "show"])
    assert out.exit_code == 0 and "paper (imported)" in out.output
