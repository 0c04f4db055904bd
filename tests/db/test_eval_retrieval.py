"""The retrieval benchmark through the real SQL path (embedded PostgreSQL + pgvector): exact mode equals
an independent NumPy implementation, ANN stays within a stated tolerance, stored runs and the
``cbir_report`` views return the printed numbers, and the read-only role sees the views only."""

from __future__ import annotations

import itertools
import uuid

import numpy as np
import psycopg
import pytest
from datasets_fixtures import store_vectors
from dbhelp import cli, fetch_one
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from cbir_pg.db.database import Database
from cbir_pg.errors import NotFoundError
from cbir_pg.eval import metrics, runs
from cbir_pg.eval.retrieval import evaluate_retrieval
from cbir_pg.eval.topn import IndexFilter, topn

_keys = itertools.count()


def make_benchmark(
    dsn: str,
    vectors: np.ndarray,
    labels: list[int],
    splits: list[str],
    datasets: list[str] | None = None,
    *,
    model: str | None = None,
    hnsw: bool = False,
    n_classes: int | None = None,
) -> tuple[str, list[int], list[int]]:
    """Encoder row, embedding table, datasets, classes (``label`` i -> class ``CT/r/f<i>``), images and
    vectors. Returns ``(model, image ids, label ids of classes 0..)``."""
    model = model or f"tm{next(_keys)}_{uuid.uuid4().hex[:6]}"
    datasets = datasets or ["dsa"] * len(labels)
    n_classes = n_classes or (max(labels) + 1)
    with psycopg.connect(dsn) as conn:
        ds_id, label_ids = _benchmark_catalogue(conn, sorted(set(datasets)), n_classes)
        with conn.cursor() as cur:
            cur.executemany(
                "insert into cbir.image (dataset_id, uri, split, label_id) values (%s, %s, %s, %s) returning id",
                [
                    (ds_id[d], f"{model}/{k}.png", s, label_ids[lab])
                    for k, (d, s, lab) in enumerate(zip(datasets, splits, labels, strict=True))
                ],
                returning=True,
            )
            ids = []
            while True:
                ids.append(cur.fetchone()[0])
                if not cur.nextset():
                    break
        store_vectors(
            conn,
            model,
            ids,
            np.asarray(vectors, dtype=np.float32),
            family="test",
            number=lambda x: repr(float(x)),
            hnsw=hnsw,
        )
    return model, ids, label_ids


def _benchmark_catalogue(conn, datasets: list[str], n_classes: int) -> tuple[dict[str, int], list[int]]:
    """The datasets and the classes ``CT/r/f<c>`` (kept if already there); their ids."""
    ds_id = {}
    for key in datasets:
        row = conn.execute(
            "insert into cbir.dataset (key, kind, name) values (%s, 'test', %s)"
            " on conflict (key) do update set name = excluded.name returning id",
            (key, key),
        ).fetchone()
        ds_id[key] = row[0]
    label_ids = []
    for c in range(n_classes):
        row = conn.execute(
            "insert into cbir.label (key, modality, region, finding, kind) values (%s, 'CT', 'r', %s, %s)"
            " on conflict (key) do update set kind = excluded.kind returning id",
            (f"CT/r/f{c}", f"f{c}", "anatomical" if c % 2 else "pathological"),
        ).fetchone()
        label_ids.append(row[0])
    return ds_id, label_ids


def numpy_reference(vectors, labels, ids, index_mask, query_mask, ns):
    """Independent exact search + the paper's P@N in NumPy (float64 cosine, ties by image id)."""
    v = np.asarray(vectors, dtype=np.float64)
    v = v / np.linalg.norm(v, axis=1, keepdims=True)
    # distances are computed once per distinct vector, so copies of a vector tie exactly (a BLAS
    # product may round identical rows differently)
    uniq, inverse = np.unique(v, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    ids = np.asarray(ids)
    labels = np.asarray(labels)
    idx = np.flatnonzero(index_mask)
    per_query, qlabels = [], []
    for qi in np.flatnonzero(query_mask):
        cand = idx[idx != qi]
        dist = (1.0 - uniq @ uniq[inverse[qi]])[inverse[cand]]
        order = cand[np.lexsort((ids[cand], dist))]
        rel = labels[order] == labels[qi]
        size = int((labels[cand] == labels[qi]).sum())
        row = []
        for n_cut in ns:
            n = min(n_cut, size)
            row.append(rel[:n].sum() / n if n else np.nan)
        per_query.append(row)
        qlabels.append(labels[qi])
    p = np.array(per_query)
    ok = ~np.isnan(p[:, 0])
    micro = p[ok].mean(axis=0)
    classes = sorted({lab for lab, o in zip(qlabels, ok, strict=True) if o})
    macro = np.mean([p[ok & (np.array(qlabels) == c)].mean(axis=0) for c in classes], axis=0)
    return micro, macro, p


def prototype_vectors(rng: np.random.Generator, n_protos: int, dim: int) -> np.ndarray:
    """Prototypes whose distances to each other are at least 1e-3 apart (for every prototype as the
    query), so float32 (pgvector) and float64 (NumPy) rank them the same; copies of one prototype are
    exact ties, broken by image id in both."""
    while True:
        p = rng.normal(size=(n_protos, dim)).astype(np.float32)
        u = p.astype(np.float64) / np.linalg.norm(p.astype(np.float64), axis=1, keepdims=True)
        d = np.sort(1.0 - u @ u.T, axis=1)
        if (np.diff(d, axis=1) > 1e-3).all():
            return p


# --------------------------------------------------------------------------- exact == NumPy
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1), n_images=st.integers(20, 120), n_classes=st.integers(1, 6))
def test_exact_mode_equals_numpy(db, seed, n_images, n_classes):
    rng = np.random.default_rng(seed)
    protos = prototype_vectors(rng, 12, 8)
    vectors = protos[rng.integers(0, len(protos), n_images)]
    labels = rng.integers(0, n_classes, n_images).tolist()
    splits = rng.choice(["train", "test", "val"], n_images, p=[0.6, 0.3, 0.1]).tolist()
    splits[0], splits[1] = "train", "test"
    ns = (1, 3, 5, 10)
    model, ids, _ = make_benchmark(db, vectors, labels, splits, n_classes=n_classes)
    res = evaluate_retrieval(Database(db), model, ns=ns, mode="exact", progress=False, batch_size=7)
    micro, macro, per_query = numpy_reference(
        vectors, labels, ids, np.array(splits) == "train", np.array(splits) == "test", ns
    )
    r = res.runs["exact"]
    assert r.n_queries == splits.count("test")
    assert r.n_index == splits.count("train")
    assert r.plan_uses_index is False
    np.testing.assert_allclose(r.summary.per_query, per_query, atol=1e-9, equal_nan=True)
    np.testing.assert_allclose(r.summary.micro, micro, atol=1e-9, equal_nan=True)
    np.testing.assert_allclose(r.summary.macro, macro, atol=1e-9, equal_nan=True)


# --------------------------------------------------------------------------- hand-built cases
def test_ties_small_classes_missing_class_and_self_exclusion(db):
    e = np.eye(4, dtype=np.float32)
    # index (train): three exact copies of e0 (classes 1, 0, 0, in id order), one e1 of class 0
    # and one e2 of class 1; queries (test): e0 of class 0, e2 of class 1, e3 of class 2 (no index image)
    vectors = np.stack([e[0], e[0], e[0], e[1], e[2], e[0], e[2], e[3]])
    labels = [1, 0, 0, 0, 1, 0, 1, 2]
    splits = ["train"] * 5 + ["test"] * 3
    model, ids, _ = make_benchmark(db, vectors, labels, splits)
    res = evaluate_retrieval(Database(db), model, ns=(1, 3, 5), mode="exact", progress=False)
    t = res.runs["exact"].topn
    # ties at distance 0 are ordered by image id: the class-1 copy (lowest id) ranks first
    assert t.neighbour_ids[0, :3].tolist() == ids[:3]
    s = res.runs["exact"].summary
    # query 0, class 0 (3 index images): P@1 = 0, P@3 = 2/3, P@5 = n=min(5,3) -> 2/3
    np.testing.assert_allclose(s.per_query[0], [0, 2 / 3, 2 / 3])
    # query 1, class 1 (2 index images): nearest is e2 (class 1), then the e0 copies at distance 1,
    # ordered by id: id0 is class 1 -> P@3 and P@5 use n = 2: 2/2
    np.testing.assert_allclose(s.per_query[1], [1, 1, 1])
    # query 2, class 2: absent from the index -> undefined, left out
    assert np.isnan(s.per_query[2]).all()
    assert s.n_undefined == 1
    np.testing.assert_allclose(s.micro, [0.5, 5 / 6, 5 / 6])
    np.testing.assert_allclose(s.macro, [0.5, 5 / 6, 5 / 6])
    assert any("no index image" in w for w in res.warnings)

    # the query is never its own neighbour when it is also an index image
    t2 = topn(
        Database(db), model, query_ids=ids[:5], index_filter=IndexFilter(), n=4, mode="exact", progress=False
    )
    for qid, row in zip(ids[:5], t2.neighbour_ids, strict=True):
        assert qid not in row.tolist()
    assert t2.counts.tolist() == [4] * 5
    # an explicit id subset is the index
    t3 = topn(
        Database(db),
        model,
        query_ids=[ids[5]],
        index_filter=IndexFilter(splits=None, image_ids=(ids[3], ids[4])),
        n=3,
        mode="exact",
        progress=False,
    )
    assert t3.n_index == 2 and t3.counts.tolist() == [2]
    assert t3.neighbour_ids[0].tolist() == [ids[3], ids[4], -1]


def test_dataset_restriction_and_errors(db):
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(40, 8)).astype(np.float32)
    labels = rng.integers(0, 3, 40).tolist()
    splits = ["train", "test"] * 20
    datasets = ["dsa"] * 20 + ["dsb"] * 20
    model, _, _ = make_benchmark(db, vectors, labels, splits, datasets)
    both = evaluate_retrieval(Database(db), model, mode="exact", progress=False)
    only_a = evaluate_retrieval(Database(db), model, datasets=["dsa"], mode="exact", progress=False)
    assert (both.primary.n_queries, both.primary.n_index) == (20, 20)
    assert (only_a.primary.n_queries, only_a.primary.n_index) == (10, 10)
    with pytest.raises(NotFoundError, match="unknown dataset"):
        evaluate_retrieval(Database(db), model, datasets=["nope"], progress=False)
    with pytest.raises(NotFoundError, match="unknown model"):
        evaluate_retrieval(Database(db), "not_a_model", progress=False)


def test_the_same_image_sets_are_one_scope_one_leaderboard_row(db):
    """Issue 26, item 9: "all" and the explicit list of every dataset are the same experiment."""
    rng = np.random.default_rng(2)
    vectors = rng.normal(size=(40, 8)).astype(np.float32)
    labels = rng.integers(0, 3, 40).tolist()
    model, _, _ = make_benchmark(db, vectors, labels, ["train", "test"] * 20, ["dsa"] * 20 + ["dsb"] * 20)
    with psycopg.connect(db, autocommit=True) as c:  # a dataset without images covers nothing
        c.execute("insert into cbir.dataset (key, kind, name) values ('empty_ds', 'csv', 'E')")
    evaluate_retrieval(Database(db), model, mode="exact", progress=False)
    evaluate_retrieval(Database(db), model, datasets=["dsb", "dsa"], mode="exact", progress=False)
    evaluate_retrieval(Database(db), model, datasets=["dsa"], mode="exact", progress=False)
    with psycopg.connect(db) as c:
        scopes = [
            r[0]
            for r in c.execute(
                "select scope from cbir_report.eval_runs where model = %s order by run_id", (model,)
            )
        ]
        board = c.execute(
            "select scope, n_queries from cbir_report.leaderboard where model = %s order by scope", (model,)
        ).fetchall()
    assert scopes == ["dsa,dsb:train->test", "dsa,dsb:train->test", "dsa:train->test"]
    assert board == [("dsa,dsb:train->test", 20), ("dsa:train->test", 10)]


# --------------------------------------------------------------------------- ANN vs exact, storage, views
ANN_RECALL_AT_10_MIN = 0.95  # stated tolerance (docs/evaluation.md): recall@10 >= 0.95, |ΔP@N| <= 0.02
ANN_DELTA_P_MAX = 0.02


def _six_clusters(db: str, *, seed: int, n: int, hnsw: bool = False) -> str:
    """A benchmark of ``n`` seeded 16-d vectors around six class centres, 85 % train and 15 % test; its
    model key."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(6, 16))
    labels = rng.integers(0, 6, n)
    vectors = (centres[labels] * 0.6 + rng.normal(size=(n, 16))).astype(np.float32)
    splits = rng.choice(["train", "test"], n, p=[0.85, 0.15]).tolist()
    return make_benchmark(db, vectors, labels.tolist(), splits, hnsw=hnsw)[0]


@pytest.fixture
def ann_run(db):
    model = _six_clusters(db, seed=7, n=1800, hnsw=True)
    res = evaluate_retrieval(Database(db), model, compare_exact=True, ef_search=10, progress=False)
    return db, model, res


def test_ann_within_tolerance_of_exact(ann_run):
    _, _, res = ann_run
    ann, exact = res.runs["ann"], res.runs["exact"]
    assert ann.plan_uses_index is True and exact.plan_uses_index is False
    assert ann.ef_search == 10  # ef_search is raised to at least max(N) = 10
    assert res.recall is not None and res.recall[-1] >= ANN_RECALL_AT_10_MIN
    assert np.all(np.abs(res.delta_micro) <= ANN_DELTA_P_MAX)
    assert np.all(np.abs(res.delta_macro) <= ANN_DELTA_P_MAX)
    np.testing.assert_allclose(res.delta_micro, ann.summary.micro - exact.summary.micro)
    assert 0.2 < exact.summary.micro[0] < 1.0  # clustered data: well above chance (1/6), not trivial


def _read_views(dsn: str, model: str, ann, exact) -> tuple:
    """What the BI views hold for the two runs: leaderboard rows by mode, the ANN quality row, the
    exact run's per-class rows, the ANN run's row."""
    with psycopg.connect(dsn) as conn:
        board = {
            r[0]: r[1:]
            for r in conn.execute(
                "select mode, p1_micro, p3_micro, p5_micro, p10_micro, p1_macro, p3_macro, p5_macro, p10_macro,"
                " run_id, n_queries, n_index from cbir_report.leaderboard where model = %s",
                (model,),
            )
        }
        quality = conn.execute(
            "select exact_run_id, ef_search, hnsw_m, recall1, recall3, recall5, recall10,"
            " dp1_micro, dp3_micro, dp5_micro, dp10_micro, dp1_macro, dp3_macro, dp5_macro, dp10_macro"
            " from cbir_report.ann_quality where run_id = %s",
            (ann.run_id,),
        ).fetchone()
        classes = conn.execute(
            "select class, kind, n_queries, class_index_size, p1, p3, p5, p10 from cbir_report.class_precision"
            " where run_id = %s order by class",
            (exact.run_id,),
        ).fetchall()
        run = conn.execute(
            "select params, index_params, timings, code_version, n_queries, n_index from cbir_report.eval_runs"
            " where run_id = %s",
            (ann.run_id,),
        ).fetchone()
    return board, quality, classes, run


def _check_views(views: tuple, res, ann, exact) -> None:
    """The views return the printed numbers (rounded to 4 decimals for dashboards)."""
    board, quality, classes, run = views
    for mode, r in (("ann", ann), ("exact", exact)):
        # the views round to 4 decimals for dashboards
        np.testing.assert_allclose(
            board[mode][:8], list(r.summary.micro) + list(r.summary.macro), rtol=0, atol=5e-5
        )
        assert board[mode][8:] == (r.run_id, r.n_queries, r.n_index)
    assert quality[:3] == (exact.run_id, ann.ef_search, 16)
    np.testing.assert_allclose(quality[3:7], res.recall, atol=5e-5)
    np.testing.assert_allclose(quality[7:11], res.delta_micro, atol=5e-5)
    np.testing.assert_allclose(quality[11:], res.delta_macro, atol=5e-5)
    assert len(classes) == 6
    s = exact.summary
    for row, lab_mean, nq in zip(classes, s.class_means, s.class_n_queries, strict=True):
        assert row[1] in ("anatomical", "pathological")
        assert row[2] == nq and row[3] > 0
        np.testing.assert_allclose(row[4:], lab_mean, atol=5e-5)
    params, index_params, timings, code_version, nq, ni = run
    assert params["exact_run_id"] == exact.run_id and params["ef_search_effective"] == 10
    assert params["ns"] == [1, 3, 5, 10] and params["index_splits"] == ["train"]
    assert index_params["hnsw"]["m"] == 16 and index_params["hnsw"]["ef_construction"] == 64
    assert timings["queries_per_s"] > 0 and code_version.startswith("0.")
    assert (nq, ni) == (ann.n_queries, ann.n_index)


def _check_per_query_rows(dsn: str, res, ann, exact) -> None:
    """The stored per-query rows recompute every aggregate."""
    stored = runs.load_queries(Database(dsn), exact.run_id)
    assert len(stored.query_ids) == exact.n_queries
    again = metrics.summarise(stored.relevant, stored.class_index_sizes, stored.labels, res.ns)
    np.testing.assert_allclose(again.micro, exact.summary.micro, atol=1e-12)
    np.testing.assert_allclose(again.macro, exact.summary.macro, atol=1e-12)
    assert runs.run_metrics(Database(dsn), ann.run_id)[("recall", 10, "micro")] == pytest.approx(
        res.recall[-1], abs=1e-12
    )


def test_stored_runs_and_views_return_the_printed_numbers(ann_run):
    dsn, model, res = ann_run
    ann, exact = res.runs["ann"], res.runs["exact"]
    _check_views(_read_views(dsn, model, ann, exact), res, ann, exact)
    _check_per_query_rows(dsn, res, ann, exact)
    # table2 and `eval show` print the leaderboard's numbers
    t2 = runs.table2(Database(dsn))
    with psycopg.connect(dsn) as c:  # "all" is recorded as the datasets the run covered (eval/scope.py)
        every = ",".join(r[0] for r in c.execute("select key from cbir.dataset order by key"))
    row = t2.loc[(model, "ann", f"{every}:train->test", "default", "computed")]
    np.testing.assert_allclose(
        [row[("micro", f"P@{n}")] for n in (1, 3, 5, 10)], ann.summary.micro, atol=5e-5
    )
    out = cli(dsn, "eval", "show")
    line = next(ln for ln in out.output.splitlines() if model in ln and " ann " in ln)
    for v in list(ann.summary.micro) + list(ann.summary.macro):
        assert f"{v:.4f}" in line


def test_cli_retrieval_prints_the_stored_numbers(db):
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(60, 8)).astype(np.float32)
    model, _, _ = make_benchmark(
        db, vectors, rng.integers(0, 3, 60).tolist(), ["train", "test", "train"] * 20
    )
    out = cli(db, *f"eval retrieval --model {model} --mode exact --n 1,5 --no-progress".split())
    p1, p5 = fetch_one(
        db,
        "select p1_micro, p5_micro from cbir_report.leaderboard where model = %s and mode = 'exact'",
        (model,),
    )
    micro_line = next(ln for ln in out.output.splitlines() if "micro" in ln)
    assert f"{p1:.4f}" in micro_line and f"{p5:.4f}" in micro_line


# --------------------------------------------------------------------------- the read-only role
def test_reader_role_reads_views_but_not_patients(ann_run, pg_server_dsn):
    dsn, model, _ = ann_run
    role = f"reader_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_server_dsn, autocommit=True) as admin:
        admin.execute(
            sql.SQL("create role {} login password {} in role cbir_reader").format(
                sql.Identifier(role), sql.Literal(role + "-pw")
            )
        )
    try:
        params = conninfo_to_dict(dsn)
        params["user"] = role
        params["password"] = role + "-pw"
        with psycopg.connect(make_conninfo(**params), autocommit=True) as conn:
            for view in ("leaderboard", "class_precision", "ann_quality", "eval_runs"):
                n = conn.execute(
                    sql.SQL("select count(*) from cbir_report.{}").format(sql.Identifier(view))
                ).fetchone()[0]
                assert n >= 1, view
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("select * from cbir.patient")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("select * from cbir.eval_query")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("create view cbir_report.sneaky as select 1")
    finally:
        with psycopg.connect(pg_server_dsn, autocommit=True) as admin:
            admin.execute(sql.SQL("drop role if exists {}").format(sql.Identifier(role)))


def test_ann_on_the_default_halfvec_index_uses_it_and_exact_stays_full_precision(db):
    """``index build``'s default storage is a halfvec expression index on the vector column: ann mode
    must order by that expression (else it would silently scan everything), exact mode by the stored
    vectors."""
    from cbir_pg.index import build_index

    model = _six_clusters(db, seed=11, n=1500)
    report = build_index(Database(db), model, recall_queries=0, progress=False)
    assert report.opclass == "halfvec_cosine_ops"
    res = evaluate_retrieval(Database(db), model, compare_exact=True, ef_search=10, progress=False)
    ann, exact = res.runs["ann"], res.runs["exact"]
    assert ann.plan_uses_index is True and exact.plan_uses_index is False
    assert res.recall is not None and res.recall[-1] >= ANN_RECALL_AT_10_MIN
    assert np.all(np.abs(res.delta_micro) <= ANN_DELTA_P_MAX)
