"""kNN, linear probe, index-size ablation and the report, through a real PostgreSQL, on seeded
clustered synthetic embeddings (and, where the MedMNIST files exist, the real benchmark)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psycopg
import pytest
from datasets_fixtures import store_vectors

from cbir_pg.db.database import Database

# (modality, region, finding, kind, n_train, n_val, n_test)
CLASSES = [
    ("CT", "chest", "normal", "anatomical", 260, 25, 30),
    ("CT", "chest", "nodule", "pathological", 140, 25, 30),
    ("MR", "brain", "normal", "anatomical", 70, 25, 30),
    ("MR", "brain", "tumour", "pathological", 40, 25, 30),
]


@dataclass
class Synth:
    model: str
    label_ids: list[int]
    ids: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    X: dict[str, np.ndarray]


def _clustered_catalogue(conn, root: Path | None) -> tuple[int, list[int]]:
    """The ``synth`` dataset (files under ``root`` when given) and the classes above; their ids."""
    ds = conn.execute(
        "insert into cbir.dataset (key, kind, name, root) values ('synth', 'synthetic', 'synth', %s) returning id",
        (str(root) if root else "/nonexistent",),
    ).fetchone()[0]
    label_ids = [
        conn.execute(
            "insert into cbir.label (key, modality, region, finding, kind) values (%s, %s, %s, %s, %s) returning id",
            (f"{m}/{r}/{f}", m, r, f, k),
        ).fetchone()[0]
        for m, r, f, k, *_ in CLASSES
    ]
    return ds, label_ids


def _png(root: Path, i: int, c: int) -> None:
    """A flat 28x28 image whose shade says its class."""
    from PIL import Image

    (root / "img").mkdir(exist_ok=True)
    Image.fromarray(np.full((28, 28), 40 + 50 * c, np.uint8)).save(root / f"img/{i}.png")


def make_clustered(dsn: str, root: Path | None = None) -> Synth:
    """Seeded clustered unit vectors (model ``toyan``, 16-d) for the classes above; with ``root``, a
    small PNG per image too."""
    model, dim, noise = "toyan", 16, 0.9
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(len(CLASSES), dim))
    ids: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    labels: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    X: dict[str, list[np.ndarray]] = {"train": [], "val": [], "test": []}
    with psycopg.connect(dsn) as conn:
        ds, label_ids = _clustered_catalogue(conn, root)
        rows = []
        i = 0
        for c, (m, r, _f, _k, *counts) in enumerate(CLASSES):
            for split, n in zip(("train", "val", "test"), counts, strict=True):
                for _ in range(n):
                    v = centres[c] + noise * rng.normal(size=dim)
                    v /= np.linalg.norm(v)
                    img = conn.execute(
                        "insert into cbir.image (dataset_id, uri, modality, body_region, split, label_id)"
                        " values (%s, %s, %s, %s, %s, %s) returning id",
                        (ds, f"img/{i}.png", m, r, split, label_ids[c]),
                    ).fetchone()[0]
                    if root is not None:
                        _png(root, i, c)
                    i += 1
                    rows.append((img, v))
                    ids[split].append(img)
                    labels[split].append(label_ids[c])
                    X[split].append(v)
        # an excluded image must never count
        bad = conn.execute(
            "insert into cbir.image (dataset_id, uri, split, label_id, excluded, exclusion_reason)"
            " values (%s, 'bad.png', 'test', %s, true, 'duplicate') returning id",
            (ds, label_ids[0]),
        ).fetchone()[0]
        rows.append((bad, centres[1] / np.linalg.norm(centres[1])))
        store_vectors(
            conn,
            model,
            [img for img, _ in rows],
            np.asarray([v for _, v in rows]),
            number=lambda x: f"{x:.7g}",
        )
    return Synth(
        model,
        label_ids,
        {s: np.array(v) for s, v in ids.items()},
        {s: np.array(v) for s, v in labels.items()},
        {s: np.array(v) for s, v in X.items()},
    )


@pytest.fixture
def synth(db: str) -> Synth:
    return make_clustered(db)


def _numpy_neighbours(s: Synth, split: str, K: int) -> np.ndarray:
    sims = s.X[split] @ s.X["train"].T
    order = np.lexsort((np.broadcast_to(s.ids["train"], sims.shape), -sims), axis=1)[:, :K]
    return s.labels["train"][order]


def test_knn_matches_numpy_and_is_stored(db, synth):
    from cbir_pg.eval.classification import knn_metrics, select_k
    from cbir_pg.eval.knn import evaluate_knn

    res = evaluate_knn(Database(db), synth.model, k_range=range(1, 30), mode="exact", progress=False)
    # the reference: exact neighbours by NumPy, the same selection rule
    ref_sel = select_k(
        synth.labels["val"], _numpy_neighbours(synth, "val", 29), synth.label_ids, range(1, 30)
    )
    assert res.k == ref_sel.best_k
    ref = knn_metrics(synth.labels["test"], _numpy_neighbours(synth, "test", 29), synth.label_ids, res.k)
    assert res.test.f1_micro == pytest.approx(ref.f1_micro)
    assert res.test.auprc_macro == pytest.approx(ref.auprc_macro)
    assert res.test.auroc_micro == pytest.approx(ref.auroc_micro)
    assert res.n_test == 120 and res.n_val == 100 and res.n_index == 510
    assert 0.5 < res.test.f1_micro < 1.0  # clustered but overlapping: neither chance nor perfect
    with psycopg.connect(db) as conn:
        row = conn.execute(
            "select model, k, f1_micro, auprc_macro, auroc_macro, n_queries, n_index, is_latest"
            " from cbir_report.knn_results where run_id = %s",
            (res.run_id,),
        ).fetchone()
        assert row[0] == synth.model and row[1] == res.k
        # the views round to 4 decimals for dashboards
        assert row[2] == pytest.approx(res.test.f1_micro, abs=5e-5)
        assert row[3] == pytest.approx(res.test.auprc_macro, abs=5e-5)
        assert row[5:] == (120, 510, True)
        curve = conn.execute(
            "select count(*) from cbir_report.knn_k_curve where run_id = %s", (res.run_id,)
        ).fetchone()[0]
        assert curve == 29
        p1 = dict(
            conn.execute(
                "select label_id, class_index_size from cbir.eval_class_metric where run_id = %s and metric = 'p_at_1'",
                (res.run_id,),
            ).fetchall()
        )
        assert p1 == {lab: n for lab, (*_, n, _v, _t) in zip(synth.label_ids, CLASSES, strict=True)}


def test_knn_ann_mode_agrees_with_exact_on_small_data(db, synth):
    from cbir_pg.eval.knn import evaluate_knn

    exact = evaluate_knn(
        Database(db), synth.model, k_range=range(1, 20), mode="exact", store=False, progress=False
    )
    ann = evaluate_knn(
        Database(db), synth.model, k_range=range(1, 20), mode="ann", store=False, progress=False
    )
    assert ann.k == exact.k and ann.test.f1_micro == pytest.approx(exact.test.f1_micro)


def test_linear_probe_through_db(db, synth):
    from cbir_pg.eval.linear import evaluate_linear

    res = evaluate_linear(
        Database(db), synth.model, seed=3, lr=0.05, max_epochs=40, patience=5, progress=False
    )
    assert res.n_train == 510 and res.n_test == 120
    assert res.test.f1_micro > 0.5
    assert 1 <= res.best_epoch <= res.epochs_run <= 40
    again = evaluate_linear(
        Database(db), synth.model, seed=3, lr=0.05, max_epochs=40, patience=5, store=False, progress=False
    )
    assert again.test.as_dict() == res.test.as_dict()  # seeded
    with psycopg.connect(db) as conn:
        row = conn.execute(
            "select f1_micro, auroc_macro, epochs_run, best_epoch, is_latest from cbir_report.linear_results where run_id = %s",
            (res.run_id,),
        ).fetchone()
    assert row[0] == pytest.approx(res.test.f1_micro, abs=5e-5)  # rounded to 4 decimals in the view
    assert row[2:] == (res.epochs_run, res.best_epoch, True)


def _eval_json(db: str, *args: str) -> dict[str, dict]:
    """``cbir-pg eval ARGS --format json``: its rows by split (prose goes to stderr)."""
    import json

    from typer.testing import CliRunner

    from cbir_pg.app.cli import app

    r = CliRunner().invoke(app, ["--dsn", db, "eval", *args, "--no-progress", "--format", "json"])
    assert r.exit_code == 0, (r.output, r.exception)
    return {row["split"]: row for row in map(json.loads, r.stdout.splitlines())}


def test_knn_and_linear_commands_hand_their_options_to_the_library(db, synth):
    """The shared options (--model, --dataset, --mode, --connections, --seed, --no-progress) reach the
    library: each command's rows carry the numbers of the library call with the same settings."""
    from cbir_pg.eval.knn import evaluate_knn
    from cbir_pg.eval.linear import evaluate_linear

    common = ("--model", synth.model, "--dataset", "synth")
    knn = _eval_json(db, "knn", *common, "--k", "1..9", "--mode", "exact", "--connections", "1")
    ref = evaluate_knn(
        Database(db), synth.model, k_range=range(1, 10), datasets=["synth"], mode="exact", store=False
    )
    assert knn["test"]["f1_micro"] == pytest.approx(ref.test.f1_micro)
    assert knn["val"]["auroc_macro"] == pytest.approx(ref.val.auroc_macro)
    linear = _eval_json(db, "linear", *common, "--seed", "3", "--lr", "0.05", "--max-epochs", "5")
    ref = evaluate_linear(
        Database(db), synth.model, seed=3, lr=0.05, max_epochs=5, datasets=["synth"], store=False
    )
    assert linear["test"]["f1_micro"] == pytest.approx(ref.test.f1_micro)
    assert linear["test"]["run"] != knn["test"]["run"]  # each command stored its own run
    with pytest.raises(AssertionError, match="no labelled 'test' images"):  # --dataset restricts
        _eval_json(db, "knn", "--model", synth.model, "--dataset", "nosuch", "--mode", "exact")


def test_ablation_scales_down_and_is_stored(db, synth):
    from cbir_pg.eval.ablation import run_ablation

    res = run_ablation(Database(db), synth.model, seeds=(0, 1), progress=False)
    # no class has > 3000 index images: threshold lowered to the largest size below the second-largest
    # class (140 -> 100), so the two classes with 260 and 140 index images take part; sizes capped at 140
    assert res.scaled and res.notes
    assert res.min_class_size == 100
    assert [c.n_index for c in sorted(res.classes, key=lambda c: -c.n_index)] == [260, 140]
    assert res.sizes == [5, 10, 25, 50, 100, 140]
    assert res.queries_per_class == 30  # 38 requested, 30 test images per class
    assert len(res.points) == 12
    for p in res.points:
        assert p.n_index == 2 * p.index_size and p.n_queries == 60 and 0.0 <= p.p_at_1 <= 1.0
    means = res.mean_by_size()
    assert means[140] >= means[5] - 0.1
    with psycopg.connect(db) as conn:
        rows = conn.execute(
            "select index_size, seed, p_at_1, scaled from cbir_report.ablation where run_id = %s order by 1, 2",
            (res.run_id,),
        ).fetchall()
    assert [(r[0], r[1]) for r in rows] == [(s, seed) for s in res.sizes for seed in (0, 1)]
    assert all(r[3] for r in rows)


def test_ablation_without_scaling(db, synth):
    from cbir_pg.eval.ablation import run_ablation

    res = run_ablation(
        Database(db),
        synth.model,
        sizes=(5, 20, 60),
        min_class_size=60,
        queries_per_class=10,
        store=False,
        progress=False,
    )
    assert not res.scaled and res.notes == []
    assert len(res.classes) == 3 and res.sizes == [5, 20, 60]
    assert {p.n_queries for p in res.points} == {30}


def test_report_writes_figures_and_tables(db, tmp_path):
    from PIL import Image

    from cbir_pg.eval.ablation import run_ablation
    from cbir_pg.eval.knn import evaluate_knn
    from cbir_pg.eval.linear import evaluate_linear
    from cbir_pg.eval.report import write_report

    images = tmp_path / "images"
    images.mkdir()
    syn = make_clustered(db, root=images)
    knn = evaluate_knn(Database(db), syn.model, k_range=range(1, 16), mode="exact", progress=False)
    evaluate_linear(Database(db), syn.model, lr=0.05, max_epochs=10, patience=3, progress=False)
    run_ablation(Database(db), syn.model, progress=False)
    out = tmp_path / "report"
    rep = write_report(Database(db), out, tsne_sample=300, grid_queries=3, seed=1)
    names = sorted(p.name for p in rep.figures)
    assert names == sorted(
        [
            "fig3b_ablation.png",
            f"fig3a_class_p1_vs_size_{syn.model}.png",
            f"fig5_tsne_{syn.model}.png",
            f"fig2_retrievals_{syn.model}.png",
        ]
    )
    for p in rep.figures:
        with Image.open(p) as im:
            im.verify()
        with Image.open(p) as im:
            assert im.format == "PNG"
            assert 300 <= im.width <= 4000 and 150 <= im.height <= 3000, (p.name, im.size)
    with Image.open(out / f"fig5_tsne_{syn.model}.png") as im:
        assert im.width > 2 * im.height  # three panels side by side
    with Image.open(out / f"fig2_retrievals_{syn.model}.png") as im:
        assert im.height > 3 * 96  # three query rows
    page = (out / "index.html").read_text()
    for p in rep.figures:
        assert f"src='{p.name}' alt='" in page  # every image has an alt text
    assert "Table 4" in page and f"{knn.test.f1_micro:.4f}" in page
    assert "no retrieval leaderboard" in " ".join(rep.notes)
    assert not list(out.glob(".*"))  # no temporary folders left behind
    assert rep.reused == []

    # a second report from the same data redraws nothing: every figure keeps its bytes and mtime
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in rep.figures}
    again = write_report(Database(db), out, tsne_sample=300, grid_queries=3, seed=1)
    assert sorted(p.name for p in again.reused) == names
    assert {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in again.figures} == before
    assert (out / "index.html").read_text() == page
    # another seed samples other t-SNE points and grid queries: only those two figures are redrawn;
    # a deleted figure is drawn again
    (out / "fig3b_ablation.png").unlink()
    third = write_report(Database(db), out, tsne_sample=300, grid_queries=3, seed=2)
    assert sorted(p.name for p in third.reused) == [f"fig3a_class_p1_vs_size_{syn.model}.png"]
    assert (out / "fig3b_ablation.png").is_file()
    for name in (f"fig5_tsne_{syn.model}.png", f"fig2_retrievals_{syn.model}.png"):
        assert (out / name).read_bytes() != before[name][1]


def test_report_without_stored_runs_and_reader_role(db, synth, tmp_path):
    from PIL import Image

    from cbir_pg.eval.report import write_report

    rep = write_report(Database(db), tmp_path / "r", grid_queries=2, tsne_sample=200)
    names = {p.name for p in rep.figures}
    # Fig. 3A falls back to a top-1 search; no ablation figure; no grids (image files are absent)
    assert names == {f"fig3a_class_p1_vs_size_{synth.model}.png", f"fig5_tsne_{synth.model}.png"}
    with Image.open(tmp_path / "r" / f"fig3a_class_p1_vs_size_{synth.model}.png") as im:
        assert im.width >= 300
    joined = " ".join(rep.notes)
    assert "ablation" in joined and "grids" in joined and "kNN" in joined
    page = (tmp_path / "r" / "index.html").read_text()
    assert page.count("<img ") == page.count(" alt='") == 2
    # the views are readable by the BI role
    with psycopg.connect(db) as conn:
        conn.execute("set role cbir_reader")
        for view in ("knn_results", "knn_k_curve", "linear_results", "ablation"):
            assert conn.execute(f"select count(*) from cbir_report.{view}").fetchone()[0] == 0


@pytest.mark.real_data
@pytest.mark.slow
def test_ablation_on_real_medmnist(medmnist_lite0_db):
    """The combined BreastMNIST + PneumoniaMNIST benchmark embedded with efficientnet_lite0: one P@1
    per size, sizes capped by the class sizes (no class but XR/chest/pneumonia has > 3000 images)."""
    from cbir_pg.eval.ablation import run_ablation

    db = medmnist_lite0_db
    res = run_ablation(Database(db), "efficientnet_lite0", progress=False)
    with psycopg.connect(db) as conn:
        sizes = dict(
            conn.execute(
                "select l.key, count(*) from cbir.image i join cbir.label l on l.id = i.label_id"
                " where i.split = 'train' and not i.excluded group by l.key"
            ).fetchall()
        )
    eligible = {c.key for c in res.classes}
    assert res.scaled and res.notes
    assert len(eligible) >= 2 and "XR/chest/pneumonia" in eligible
    cap = min(sizes[k] for k in eligible)
    assert all(sizes[k] > res.min_class_size for k in eligible)
    assert max(res.sizes) == cap and all(s <= cap for s in res.sizes)
    assert sorted(p.index_size for p in res.points) == res.sizes  # one P@1 per size (one seed)
    assert all(0.0 <= p.p_at_1 <= 1.0 and p.n_index == len(eligible) * p.index_size for p in res.points)
    assert res.queries_per_class == 38
    # a real encoder beats chance well with the largest index
    assert res.mean_by_size()[cap] > 1.0 / len(eligible) + 0.2


def test_ablation_plan_on_medmnist_like_class_sizes():
    """The scale-down rule alone (no database), on the benchmark's train/test class sizes."""
    from cbir_pg.eval.ablation import DEFAULT_SIZES, AblationClass, plan_ablation

    avail = [
        AblationClass(1, "XR/chest/pneumonia", 3469, 387),
        AblationClass(2, "XR/chest/normal", 388, 234),
        AblationClass(3, "US/breast/benign_or_normal", 367, 114),
        AblationClass(4, "US/breast/malignant", 143, 42),
    ]
    plan = plan_ablation(avail, DEFAULT_SIZES, 3000, 38)
    assert plan.scaled and len(plan.notes) == 2
    assert plan.min_class_size == 250
    assert [c.label_id for c in plan.classes] == [1, 2, 3]
    assert plan.sizes == [5, 10, 25, 50, 100, 250, 367]
    assert plan.queries_per_class == 38
    # the paper's setting is left alone when enough classes are large
    big = [AblationClass(i, f"c{i}", 3500 + i, 100) for i in range(3)]
    plan = plan_ablation(big, DEFAULT_SIZES, 3000, 38)
    assert not plan.scaled and plan.sizes == list(DEFAULT_SIZES) and plan.min_class_size == 3000


def test_every_kind_of_run_fills_eval_runs_alike(db, synth):
    """Retrieval, kNN, linear-probe and ablation runs go through the one writer (cbir_pg.eval.runs):
    each has total_s, the same code version (with the git commit in a checkout), counts, metrics and
    both timestamps in cbir_report.eval_runs."""
    from cbir_pg.eval.ablation import run_ablation
    from cbir_pg.eval.knn import evaluate_knn
    from cbir_pg.eval.linear import evaluate_linear
    from cbir_pg.eval.retrieval import evaluate_retrieval
    from cbir_pg.eval.runs import code_version

    database = Database(db)
    ids = {
        "retrieval": evaluate_retrieval(database, synth.model, mode="exact", progress=False).primary.run_id,
        "knn": evaluate_knn(database, synth.model, k_range=range(1, 6), mode="exact", progress=False).run_id,
        "linear": evaluate_linear(database, synth.model, max_epochs=3, patience=2, progress=False).run_id,
        "ablation": run_ablation(database, synth.model, sizes=(5, 10), progress=False).run_id,
    }
    with database.connection() as conn:
        rows = {
            r["kind"]: r
            for r in conn.execute(
                "select run_id, kind, total_s, code_version, n_queries, n_index, metrics,"
                " started_at, finished_at, timings from cbir_report.eval_runs where run_id = any(%s)",
                (list(ids.values()),),
            ).fetchall()
        }
    assert set(rows) == set(ids)
    for kind, r in rows.items():
        assert r["run_id"] == ids[kind]
        assert r["total_s"] is not None and r["total_s"] >= 0, kind
        assert r["code_version"] == code_version(), kind
        assert r["n_queries"] > 0 and r["n_index"] > 0, kind
        assert r["metrics"], kind
        assert r["started_at"] is not None and r["finished_at"] >= r["started_at"], kind
    import cbir_pg

    assert code_version().startswith(cbir_pg.__version__)
    if (Path(cbir_pg.__file__).resolve().parent.parent / ".git").exists():
        assert "+g" in code_version()


def test_class_metric_nan_is_stored_and_shown_as_null(db, synth):
    """One NaN policy: an undefined class value is stored as NaN in eval_class_metric, a non-finite
    aggregate is not stored in eval_metric."""
    from cbir_pg.eval import runs

    database = Database(db)
    with database.connection() as conn:
        run_id = runs.insert_run(
            conn, kind="knn", model=synth.model, mode="exact", params={"x": float("nan")}
        )
        runs.write_metrics(
            conn, run_id, [runs.Metric("f1", 1, "micro", float("nan")), ("f1", 1, "macro", 0.5)]
        )
        runs.write_class_metrics(
            conn, run_id, [runs.ClassMetric(synth.label_ids[0], "f1", 1, 3, 10, float("nan"))]
        )
        runs.finish_run(conn, run_id, n_queries=3, n_index=10, metrics={"m": float("inf")}, total_s=0.25)
    with database.connection() as conn:
        metrics = conn.execute(
            "select average, value from cbir.eval_metric where run_id = %s", (run_id,)
        ).fetchall()
        cls = conn.execute("select value from cbir.eval_class_metric where run_id = %s", (run_id,)).fetchall()
        run = conn.execute(
            "select params, metrics, total_s from cbir_report.eval_runs where run_id = %s", (run_id,)
        ).fetchone()
    assert [(m["average"], m["value"]) for m in metrics] == [("macro", 0.5)]
    assert len(cls) == 1 and np.isnan(cls[0]["value"])
    assert run["params"] == {"x": None} and run["metrics"] == {"m": None} and run["total_s"] == 0.25
