"""Table 2 from the published files alone: a ``--metadata-only`` import of DKFZ-format split CSVs (no image
file anywhere) plus HDF5 vectors reproduces an independent NumPy reference of the published P@N and
neighbour lists; the authors' per-query ``knn.csv`` is compared query by query; the paper's tables sit
beside the run; two runs are compared with a paired bootstrap that equals a NumPy reference."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from datasets_fixtures import write_csv

from cbir_pg.datasets import import_dataset
from cbir_pg.db.database import Database
from cbir_pg.errors import ConfigError

LABELS = ["CT/abdomen/liver_lesion", "XR/chest/normal", "XR/chest/pneumonia"]
HEADER = ["filepath", "dataset", "split", "modality", "anatomic_region", *LABELS]


def _filepath(i: int, label: str) -> tuple[str, str]:
    """A path in each source's published layout (so the patient can be read off it)."""
    if label.startswith("CT"):
        return "radimagenet", f"radiology_ai/CT/abdomen/liver_lesion/ct{i:05d}.png"
    if i % 2:
        return "nih14", f"nih14/images_{i % 3:03d}/images/{i // 4:08d}_{i % 4:03d}.png"
    return "chexpert", f"CheXpert-v1.0/train/patient{i // 4:05d}/study{i % 4}/view1_frontal.jpg"


def _published_csvs(root: Path, n: int = 120, seed: int = 0) -> dict[str, tuple[str, str]]:
    """One split CSV per source (the paper's datasets.zip layout) and no image file: filepath ->
    (split, label)."""
    rng = np.random.default_rng(seed)
    rows: dict[str, list[list]] = {}
    truth: dict[str, tuple[str, str]] = {}
    for i in range(n):
        label = LABELS[int(rng.integers(0, 3))]
        split = ["train", "train", "val", "test"][i % 4]
        src, fp = _filepath(i, label)
        rows.setdefault(src, []).append(
            [fp, src, split, label.split("/")[0], label.split("/")[1], *[int(x == label) for x in LABELS]]
        )
        truth[fp] = (split, label)
    for src, r in rows.items():
        write_csv(root / f"{src}.csv", HEADER, r)
    return truth


def _unit(rng, n: int, dim: int) -> np.ndarray:
    v = rng.normal(size=(n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _write_h5(path: Path, vectors: dict[str, np.ndarray]) -> None:
    import h5py

    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as h5f:
        for k, v in vectors.items():
            h5f.create_dataset(k, data=v)


def _reference(vectors, truth, ns, k):
    """The published protocol in NumPy: test queries, train index, inner-product top-k (FAISS
    IndexFlatIP order), n = min(N, class index count); micro, macro and the neighbour lists."""
    index = [p for p, (s, _) in truth.items() if s == "train"]
    X = np.stack([vectors[p] for p in index]).astype(np.float64)
    ilab = np.array([truth[p][1] for p in index])
    counts = {lab: int((ilab == lab).sum()) for lab in LABELS}
    lists: dict[str, list[str]] = {}
    for q, (s, _) in truth.items():
        if s in ("test", "val"):
            order = np.argsort(-(X @ vectors[q].astype(np.float64)), kind="stable")
            lists[q] = [index[j] for j in order[:k]]
    micro, macro = [], []
    tests = [q for q, (s, _) in truth.items() if s == "test"]
    for N in ns:
        per_query, per_class = [], {}
        for q in tests:
            lab = truth[q][1]
            n = min(N, counts[lab])
            p = sum(truth[x][1] == lab for x in lists[q][:n]) / n
            per_query.append(p)
            per_class.setdefault(lab, []).append(p)
        micro.append(np.mean(per_query))
        macro.append(np.mean([np.mean(v) for v in per_class.values()]))
    return np.array(micro), np.array(macro), lists


def _import_published(db: str, tmp_path: Path, profile: str = "paper"):
    from cbir_pg.ingest.h5 import import_h5

    root = tmp_path / "splits"
    truth = _published_csvs(root)
    s = import_dataset(Database(db), "dkfz-splits", root, profile=profile, metadata_only=True, progress=False)
    vecs = dict(zip(truth, _unit(np.random.default_rng(7), len(truth), 512), strict=True))
    by_file: dict[str, dict[str, np.ndarray]] = {}
    for p, v in vecs.items():
        name = {"nih14": "nih14.h5", "CheXpert-v1.0": "CheXpert.h5", "radiology_ai": "radiology_ai.h5"}
        by_file.setdefault(name[p.split("/")[0]], {})[p] = v
    for name, vs in by_file.items():
        _write_h5(tmp_path / "embeddings" / "BiomedCLIPVitB16_224" / name, vs)
    h5 = import_h5(Database(db), tmp_path / "embeddings" / "BiomedCLIPVitB16_224", "biomedclip")
    return s, h5, truth, vecs


def _check_metadata_only_import(conn, s, h5, truth: dict, tmp_path: Path) -> None:
    """No image anywhere; every row, split and patient imported; every published vector loaded."""
    assert not any(tmp_path.rglob("*.png")) and not any(tmp_path.rglob("*.jpg"))  # no image anywhere
    assert s.imported == 120 and s.error_count == 0 and not s.excluded
    assert s.splits == {"train": 60, "val": 30, "test": 30}
    # patients read off the published paths: NIH 8-digit ids and CheXpert patient folders; RadImageNet none
    expected_patients = {f"nih14:{p.rsplit('/', 1)[1][:8]}" for p in truth if p.startswith("nih14")} | {
        f"chexpert:{p.split('/')[2]}" for p in truth if p.startswith("CheXpert")
    }
    stored = {r[0] for r in conn.execute("select patient_key from cbir.patient")}
    assert stored == expected_patients
    assert conn.execute("select count(*) from cbir.image where local_pixels").fetchone()[0] == 0
    assert h5.loaded == 120


def _check_table2_reproduced(db: str, conn, vecs: dict, truth: dict) -> tuple[int, np.ndarray]:
    """The paper profile's exact run equals the NumPy reference, neighbour lists included; its run id
    and micro P@N."""
    from cbir_pg.eval.retrieval import evaluate_retrieval

    ns = (1, 3, 5, 10)
    res = evaluate_retrieval(Database(db), "biomedclip", ns=ns, mode="exact", profile="paper", progress=False)
    micro, macro, lists = _reference(vecs, truth, ns, k=10)
    np.testing.assert_allclose(res.primary.summary.micro, micro, rtol=0, atol=1e-12)
    np.testing.assert_allclose(res.primary.summary.macro, macro, rtol=0, atol=1e-12)
    run_id = res.primary.run_id
    ours = dict(
        conn.execute(
            "select qi.uri, array(select i.uri from unnest(q.neighbours) with ordinality n(id, o)"
            " join cbir.image i on i.id = n.id order by n.o) from cbir.eval_query q"
            " join cbir.image qi on qi.id = q.query_image_id where q.run_id = %s",
            (run_id,),
        ).fetchall()
    )
    assert len(ours) == 30 and all(ours[q] == lists[q][:10] for q in ours)  # identical neighbour lists
    _check_paper_comparison(conn, run_id, micro, macro)
    return run_id, micro


def _check_paper_comparison(conn, run_id: int, micro: np.ndarray, macro: np.ndarray) -> None:
    """The paper's Table 2 beside the run: our value, the paper's, the difference; the other rows missing."""
    from cbir_pg.eval.paper import PAPER_LABEL, compare_paper

    cmp = compare_paper(conn, (2,))
    row = {(v.paper.key, v.paper.column): v for v in cmp.values}
    p1 = row[("biomedclip", "micro P@1")]
    assert p1.paper.value == 0.594 and p1.run_id == run_id
    assert p1.ours == pytest.approx(micro[0], abs=1e-12) and p1.difference == pytest.approx(micro[0] - 0.594)
    assert row[("biomedclip", "macro P@10")].ours == pytest.approx(macro[3], abs=1e-12)
    assert cmp.runs[(2, "retrieval", "biomedclip")].label == PAPER_LABEL
    missing = {m for t, _, m in cmp.missing}
    assert len(missing) == 9 and "BiomedCLIP" not in missing and "X-MIR" in missing
    assert [v.paper.reassembled for v in cmp.values if v.paper.model == "DINOv2"] == [True] * 8


def _check_pixels_not_available(db: str, conn, tmp_path: Path) -> None:
    """Search, the page's image API and a search grid say "pixels not available" instead of failing."""
    import sys

    from PIL import Image

    from cbir_pg.app.serve import build_app
    from cbir_pg.app.serve.auth import AuthConfig, new_login_token
    from cbir_pg.search import PixelsNotAvailable, QueryImage, load_image_rgb, search, write_search_grid

    qid = conn.execute("select id from cbir.image where split = 'test' order by id limit 1").fetchone()[0]
    with pytest.raises(PixelsNotAvailable, match="pixels not available"):
        load_image_rgb(Database(db), qid)
    hits = search(Database(db), "biomedclip", image_id=qid, k=3, split="train")
    assert len(hits) == 3
    png = write_search_grid(Database(db), QueryImage(image_id=qid, path=None), hits, tmp_path / "grid.png")
    assert Image.open(png).size[0] > 3 * 128
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "serve"))
    from servehelp import http_client, login_owner

    auth = AuthConfig(login_token=new_login_token())
    app, store = build_app(db, tmp_path / "home", auth=auth)
    app.state.login_token = auth.login_token
    with http_client(app) as client:
        login_owner(client, app)
        r = client.get(f"/api/images/{qid}/thumbnail")
        assert r.status_code == 404 and "pixels not available" in r.text, r.text
        assert client.get(f"/api/images/{qid}").status_code == 200
        r = client.get(f"/api/images/{qid}/similar", params={"model": "biomedclip", "k": 3})
        assert r.status_code == 200 and len(r.json()["neighbours"]) == 3
    store.close()


def test_metadata_only_import_and_published_vectors_reproduce_table2(db, conn, tmp_path):
    from cbir_pg.eval.report import write_report

    s, h5, truth, vecs = _import_published(db, tmp_path)
    _check_metadata_only_import(conn, s, h5, truth, tmp_path)
    _, micro = _check_table2_reproduced(db, conn, vecs, truth)
    _check_pixels_not_available(db, conn, tmp_path)
    # the report says it too, beside the paper's numbers
    rep = write_report(Database(db), tmp_path / "rep", models=["biomedclip"], tsne_sample=0, grid_queries=2)
    page = rep.index.read_text()
    assert "The paper&#x27;s published numbers beside ours" in page or "The paper's published numbers" in page
    assert "0.594" in page and f"{micro[0] - 0.594:+.4f}" in page
    assert "120 images were imported with --metadata-only: pixels not available" in page
    assert any(p.name.startswith("fig2") for p in rep.figures)  # example grids drawn with grey tiles


def _write_knn_zip(path: Path, lists: dict[str, list[str]], k: int) -> Path:
    """experiments_<Model>.zip as published: chexpert_mimic_nih14_radimagenet/<Model>/knn.csv with the
    header query,1..k, one row per test and val query (and config.json beside it)."""
    buf = io.StringIO()
    buf.write(",".join(["query", *[str(i + 1) for i in range(k)]]) + "\n")
    for q, ns in lists.items():
        buf.write(",".join([q, *ns[:k]]) + "\n")
    with zipfile.ZipFile(path, "w") as zf:
        base = "chexpert_mimic_nih14_radimagenet/BiomedCLIPVitB16_224"
        zf.writestr(f"{base}/config.json", "{}")
        zf.writestr(f"{base}/knn.csv", buf.getvalue())
    return path


def test_compare_neighbours_with_the_authors_knn_csv(db, conn, tmp_path):
    from typer.testing import CliRunner

    from cbir_pg.app.cli import app
    from cbir_pg.eval.neighbours import compare_neighbours
    from cbir_pg.eval.retrieval import evaluate_retrieval

    _, _, truth, vecs = _import_published(db, tmp_path)
    res = evaluate_retrieval(Database(db), "biomedclip", mode="exact", profile="paper", progress=False)
    run_id = res.primary.run_id
    _, _, lists = _reference(vecs, truth, (1,), k=12)
    tests = sorted(q for q, (s, _) in truth.items() if s == "test")
    lists[tests[0]] = [lists[tests[0]][0], lists[tests[0]][2], lists[tests[0]][1], *lists[tests[0]][3:]]
    lists[tests[1]] = [*lists[tests[1]][:9], lists[tests[1]][11]]  # rank 10 is another image
    z = _write_knn_zip(tmp_path / "experiments_BiomedCLIPVitB16_224.zip", lists, k=10)

    r = compare_neighbours(conn, z, run_id, n=10)
    assert (r.run_queries, r.file_queries, r.matched) == (30, 60, 30)
    assert (r.identical, r.same_set) == (28, 29)
    first = {d.query: d for d in r.disagreements}
    assert first[tests[0]].rank == 2 and first[tests[0]].same_set
    assert first[tests[1]].rank == 10 and not first[tests[1]].same_set
    assert first[tests[1]].theirs == lists[tests[1]][9]
    r5 = compare_neighbours(conn, z, run_id, n=1)
    assert r5.identical == 30
    with pytest.raises(ConfigError, match="fewer than n = 20"):
        compare_neighbours(conn, z, run_id, n=20)

    out = CliRunner().invoke(app, ["--dsn", db, "eval", "compare-neighbours", str(z), "--run", str(run_id)])
    assert out.exit_code == 0, out.output
    assert "top-10 identical 28 (0.9333), same set 29 (0.9667)" in out.output


def test_paper_label_needs_paper_imports(db, conn, tmp_path):
    from cbir_pg.eval.paper import PROTOCOL_ONLY_LABEL, compare_paper
    from cbir_pg.eval.retrieval import evaluate_retrieval

    _import_published(db, tmp_path, profile="default")
    res = evaluate_retrieval(Database(db), "biomedclip", mode="exact", profile="paper", progress=False)
    assert any("not comparable" in w for w in res.warnings)
    prof = conn.execute("select params ->> 'profile' from cbir.eval_run").fetchone()[0]
    assert prof == "paper-protocol"
    assert conn.execute("select profile from cbir_report.leaderboard").fetchone()[0] == "paper-protocol"
    assert compare_paper(conn, (2,)).runs[(2, "retrieval", "biomedclip")].label == PROTOCOL_ONLY_LABEL
    assert compare_paper(conn, (2,), profile="paper").runs == {}
    with pytest.raises(ConfigError, match="Tables 2, 3 and 4"):
        compare_paper(conn, (5,))


# ----------------------------------------------------------------------------- paired comparison


def _reference_bootstrap(pa, pb, labels, B, R, seed, level=0.95):
    """The documented procedure, written out query by query with plain loops."""
    d = pa - pb
    classes = sorted(set(labels.tolist()))
    rng = np.random.default_rng(seed)
    boot_micro = np.zeros((B, d.shape[1]))
    class_sums = {c: np.zeros((B, d.shape[1])) for c in classes}
    for c in classes:
        idx = [i for i in range(len(labels)) if labels[i] == c]
        for b in range(B):
            pick = rng.integers(0, len(idx), size=len(idx))
            class_sums[c][b] = sum(d[idx[j]] for j in pick)
    for b in range(B):
        boot_micro[b] = sum(class_sums[c][b] for c in classes) / len(d)
    size = {c: int((labels == c).sum()) for c in classes}
    boot_macro = np.array([np.mean([class_sums[c][b] / size[c] for c in classes], axis=0) for b in range(B)])
    obs_micro = d.mean(axis=0)
    obs_macro = np.mean([d[labels == c].mean(axis=0) for c in classes], axis=0)
    prng = np.random.default_rng(seed + 1)
    ge_mi = np.zeros(d.shape[1])
    ge_ma = np.zeros(d.shape[1])
    for _ in range(R):
        s = prng.integers(0, 2, size=len(d)) * 2.0 - 1.0
        f = s[:, None] * d
        ge_mi += np.abs(f.mean(axis=0)) >= np.abs(obs_micro) - 1e-12
        ge_ma += (
            np.abs(np.mean([f[labels == c].mean(axis=0) for c in classes], axis=0))
            >= np.abs(obs_macro) - 1e-12
        )
    lo, hi = (1 - level) / 2, (1 + level) / 2
    return {
        "micro": (
            obs_micro,
            np.quantile(boot_micro, lo, axis=0),
            np.quantile(boot_micro, hi, axis=0),
            (1 + ge_mi) / (1 + R),
        ),
        "macro": (
            obs_macro,
            np.quantile(boot_macro, lo, axis=0),
            np.quantile(boot_macro, hi, axis=0),
            (1 + ge_ma) / (1 + R),
        ),
    }


def test_paired_bootstrap_equals_a_numpy_reference_on_random_data():
    from cbir_pg.eval.compare import paired_difference

    rng = np.random.default_rng(3)
    q, ns = 150, (1, 3, 5)
    labels = rng.integers(0, 4, size=q)
    pa = rng.integers(0, 6, size=(q, 3)) / 5.0
    pb = np.clip(pa + rng.normal(0, 0.3, size=(q, 3)), 0, 1)
    diffs, used, left = paired_difference(pa, pb, labels, ns, resamples=300, permutations=300, seed=5)
    ref = _reference_bootstrap(pa, pb, labels, 300, 300, 5)
    assert (used, left) == (q, 0)
    for d in diffs:
        obs, lo, hi, p = ref[d.average]
        j = ns.index(d.n)
        assert d.diff == pytest.approx(obs[j], abs=1e-12)
        assert (d.low, d.high) == (pytest.approx(lo[j], abs=1e-12), pytest.approx(hi[j], abs=1e-12))
        assert d.p_value == pytest.approx(p[j], abs=1e-12)
        assert d.low <= d.diff <= d.high
    # identical runs: no difference, a zero-width interval, p = 1
    same, _, _ = paired_difference(pa, pa, labels, ns, resamples=50, permutations=50)
    assert all(d.diff == 0 and d.low == 0 and d.high == 0 and d.p_value == 1 for d in same)
    # a query with undefined precision in either run is left out of both
    pa2 = pa.copy()
    pa2[0, :] = np.nan
    _, used, left = paired_difference(pa2, pb, labels, ns, resamples=10, permutations=10)
    assert (used, left) == (q - 1, 1)


def test_compare_runs_pairs_queries_and_refuses_other_query_sets(db, conn, tmp_path):
    from typer.testing import CliRunner

    from cbir_pg.app.cli import app
    from cbir_pg.eval import metrics
    from cbir_pg.eval.compare import compare_runs, paired_difference
    from cbir_pg.eval.retrieval import evaluate_retrieval
    from cbir_pg.eval.runs import load_queries

    _import_published(db, tmp_path)
    dbo = Database(db)
    a = evaluate_retrieval(dbo, "biomedclip", mode="exact", progress=False).primary.run_id
    b = evaluate_retrieval(dbo, "biomedclip", mode="ann", progress=False).primary.run_id
    val = evaluate_retrieval(dbo, "biomedclip", mode="exact", query_splits=("val",), progress=False)
    r = compare_runs(dbo, a, b, resamples=200, permutations=200)
    qa, qb = load_queries(dbo, a), load_queries(dbo, b)
    assert np.array_equal(qa.query_ids, qb.query_ids)
    ref, _, _ = paired_difference(
        metrics.precision_at_n(qa.relevant, qa.class_index_sizes, metrics.DEFAULT_NS),
        metrics.precision_at_n(qb.relevant, qb.class_index_sizes, metrics.DEFAULT_NS),
        qa.labels,
        metrics.DEFAULT_NS,
        resamples=200,
        permutations=200,
    )
    assert r.differences == ref and r.n_queries == 30
    stored_a = conn.execute(
        "select value from cbir.eval_metric where run_id = %s and metric = 'P' and at = 1 and average = 'micro'",
        (a,),
    ).fetchone()[0]
    assert r.get(1, "micro").a == pytest.approx(stored_a, abs=1e-12)
    with pytest.raises(ConfigError, match="different queries"):
        compare_runs(dbo, a, val.primary.run_id)
    out = CliRunner().invoke(app, ["--dsn", db, "eval", "compare", str(a), str(b), "--resamples", "100"])
    assert out.exit_code == 0, out.output
    assert "paired over 30 queries" in out.output and "stratified paired bootstrap" in out.output


def test_text_search_on_imported_vectors_of_the_same_model(db, conn, tmp_path):
    from cbir_pg.encoders.text import create_text_encoder, embed_texts
    from cbir_pg.ingest.h5 import import_h5
    from cbir_pg.search import search_text, text_search_note

    root = tmp_path / "splits"
    truth = _published_csvs(root, n=40)
    import_dataset(Database(db), "dkfz-splits", root, profile="paper", metadata_only=True, progress=False)
    vecs = dict(zip(truth, _unit(np.random.default_rng(3), len(truth), 32), strict=True))
    _write_h5(tmp_path / "emb" / "x.h5", vecs)
    assert import_h5(Database(db), tmp_path / "emb", "tiny_clip").loaded == 40

    note = text_search_note(Database(db), "tiny_clip")
    assert note is not None and "imported" in note and "text tower queries them" in note
    hits = search_text(Database(db), "tiny_clip", "pneumonia", k=5, split="train")
    q = embed_texts(create_text_encoder("tiny_clip"), ["pneumonia"])[0].astype(np.float64)
    train = [p for p, (s, _) in truth.items() if s == "train"]
    order = np.argsort(-np.array([vecs[p].astype(np.float64) @ q for p in train]), kind="stable")
    uris = dict(conn.execute("select id, uri from cbir.image").fetchall())
    assert [uris[h.image_id] for h in hits] == [train[j] for j in order[:5]]

    # vectors that declare another config (another model or preprocessing) are still refused
    conn.execute("update cbir.encoder set config_hash = 'f00' || config_hash where key = 'tiny_clip'")
    conn.commit()
    with pytest.raises(ConfigError, match="would not match"):
        search_text(Database(db), "tiny_clip", "pneumonia", k=5)
