"""The SQL API (cbir.similar_images, cbir.similar_to_vector, cbir.knn) on a real PostgreSQL + pgvector:
row counts for k around pgvector's ef_search default, agreement with exact search, filters, SQL-carrying
names, the plan really using the HNSW index, binary quantisation, halfvec, and docs/sql-api.md's examples.

Also holds :func:`make_synthetic`, the seeded data the index and search tests share.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psycopg
import pytest
from datasets_fixtures import store_vectors

from cbir_pg.db.database import Database

REPO = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------- synthetic data
N_CLASSES = 4  # classes CT/body/f0, MR/body/f1, CT/body/f2, MR/body/f3


@dataclass
class Synthetic:
    model: str
    dim: int
    ids: list[int]
    vectors: np.ndarray  # float32 unit rows, aligned with ids
    labels: list[int]
    splits: list[str]
    datasets: list[str]
    modalities: list[str]
    patients: list[int]

    def vector(self, image_id: int) -> np.ndarray:
        return self.vectors[self.ids.index(image_id)]


def _catalogue(conn, n_classes: int, n_patients: int, root: str) -> tuple[list[int], list[int], list[int]]:
    """Datasets alpha and beta, classes ``CT|MR/body/f<c>`` (CT for even ``c``), patients alternating
    between the datasets with a sex and an age; their ids."""
    ds_ids = [
        conn.execute(
            "insert into cbir.dataset (key, kind, name, root) values (%s, 'synthetic', %s, %s) returning id",
            (key, key, root),
        ).fetchone()[0]
        for key in ("alpha", "beta")
    ]
    label_ids = []
    for c in range(n_classes):
        mod = "CT" if c % 2 == 0 else "MR"
        label_ids.append(
            conn.execute(
                "insert into cbir.label (key, modality, region, finding, kind)"
                " values (%s, %s, 'body', %s, 'pathological') returning id",
                (f"{mod}/body/f{c}", mod, f"f{c}"),
            ).fetchone()[0]
        )
    patient_ids = [
        conn.execute(
            "insert into cbir.patient (dataset_id, patient_key, sex, age) values (%s, %s, %s, %s) returning id",
            (ds_ids[p % 2], f"p{p}", "F" if p % 3 else "M", float(20 + (p * 7) % 60)),
        ).fetchone()[0]
        for p in range(n_patients)
    ]
    return ds_ids, label_ids, patient_ids


def make_synthetic(
    dsn: str,
    *,
    model: str = "toy",
    dim: int = 16,
    n: int = 600,
    n_patients: int = 60,
    config_hash: str = "synthetic",
    config: dict | None = None,
    root: str = "/nonexistent",
    vectors: np.ndarray | None = None,
) -> Synthetic:
    """A dataset pair (alpha, beta), patients with sex/age, labelled images in splits, an encoder row and
    its embedding table filled with seeded, clustered unit vectors of ``N_CLASSES`` classes (or ``vectors``),
    then ANALYZE."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(N_CLASSES, dim))
    cls = rng.integers(0, N_CLASSES, size=n)
    if vectors is None:
        vecs = centres[cls] + 0.6 * rng.normal(size=(n, dim))
        vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
        vectors = vecs.astype(np.float32)
    splits = rng.choice(["train", "val", "test"], size=n, p=[0.7, 0.1, 0.2]).tolist()
    pick = rng.integers(0, n_patients, size=n)
    with psycopg.connect(dsn) as conn:
        ds_ids, label_ids, patient_ids = _catalogue(conn, N_CLASSES, n_patients, root)
        patients = [patient_ids[int(p)] for p in pick]
        modalities = ["CT" if int(c) % 2 == 0 else "MR" for c in cls]
        labels = [label_ids[int(c)] for c in cls]
        uris = [f"img/{i}.png" for i in range(n)]
        conn.execute(
            "insert into cbir.image (dataset_id, patient_id, uri, modality, split, label_id)"
            " select * from unnest(%s::int[], %s::bigint[], %s::text[], %s::text[], %s::text[], %s::int[])",
            ([ds_ids[int(p) % 2] for p in pick], patients, uris, modalities, splits, labels),
        )
        by_uri = dict(conn.execute("select uri, id from cbir.image where uri = any(%s)", (uris,)).fetchall())
        ids = [by_uri[u] for u in uris]
        store_vectors(conn, model, ids, vectors, config=config, config_hash=config_hash)
        conn.execute("analyze cbir.image")
    datasets = [("alpha", "beta")[int(p) % 2] for p in pick]
    return Synthetic(
        model, dim, ids, np.asarray(vectors, np.float32), labels, splits, datasets, modalities, patients
    )


def exact_top_k(syn: Synthetic, query: np.ndarray, k: int, mask: np.ndarray | None = None) -> list[int]:
    """Exact cosine top-k by NumPy (ties by image id): the reference SQL results are checked against."""
    sims = syn.vectors.astype(np.float64) @ (query.astype(np.float64) / np.linalg.norm(query))
    ids = np.asarray(syn.ids)
    keep = np.ones(len(ids), bool) if mask is None else np.asarray(mask)
    order = np.lexsort((ids[keep], -sims[keep]))
    return ids[keep][order][:k].tolist()


def build(dsn: str, model: str = "toy", **kw) -> None:
    from cbir_pg.index import build_index

    kw.setdefault("recall_queries", 0)
    kw.setdefault("progress", False)
    build_index(Database(dsn), model, **kw)


def similar(conn, image_id: int, k: int, model: str = "toy", **filters) -> list[tuple[int, int, float]]:
    args = ", ".join(f"p_{name} => %({name})s" for name in filters)
    q = f"select rank, image_id, similarity from cbir.similar_images(%(id)s, %(model)s, %(k)s{', ' + args if args else ''})"
    return conn.execute(q, {"id": image_id, "model": model, "k": k, **filters}).fetchall()


@pytest.fixture
def syn(db: str) -> Synthetic:
    return make_synthetic(db, n=800)


# --------------------------------------------------------------------------- row counts
@pytest.mark.parametrize("k", [1, 10, 41, 100])
def test_k_rows_for_k_around_ef_search_default(db: str, syn: Synthetic, conn, k: int):
    build(db)
    query = syn.ids[5]
    rows = similar(conn, query, k)
    assert len(rows) == k
    assert [r[0] for r in rows] == list(range(1, k + 1))
    assert query not in [r[1] for r in rows]  # the query itself is left out by default
    sims = [r[2] for r in rows]
    assert sims == sorted(sims, reverse=True)
    vec_rows = conn.execute(
        "select * from cbir.similar_to_vector(%s, 'toy', %s)", (syn.vector(query), k)
    ).fetchall()
    assert len(vec_rows) == k
    # the function put ef_search back: the caller's session is untouched
    assert conn.execute("show hnsw.ef_search").fetchone()[0] == "40"
    assert conn.execute("show hnsw.iterative_scan").fetchone()[0] == "off"


def test_callers_higher_ef_search_is_kept(db: str, syn: Synthetic, conn):
    build(db)
    conn.execute("set hnsw.ef_search = 300")
    assert len(similar(conn, syn.ids[0], 250)) == 250
    assert conn.execute("show hnsw.ef_search").fetchone()[0] == "300"


# --------------------------------------------------------------------------- exactness
def test_matches_exact_search(db: str, syn: Synthetic, conn):
    queries = syn.ids[:20]
    # no index: the query is an exact scan and must equal NumPy exactly
    for q in queries:
        rows = similar(conn, q, 10)
        mask = np.asarray(syn.ids) != q
        assert [r[1] for r in rows] == exact_top_k(syn, syn.vector(q), 10, mask)
        ref = syn.vectors.astype(np.float64) @ syn.vector(q).astype(np.float64)
        for _, image_id, sim in rows:
            assert sim == pytest.approx(ref[syn.ids.index(image_id)], abs=1e-5)
    # with the HNSW index: near-perfect recall on this small set, exact similarities
    build(db)
    hits = total = 0
    for q in queries:
        rows = similar(conn, q, 10)
        truth = exact_top_k(syn, syn.vector(q), 10, np.asarray(syn.ids) != q)
        hits += len({r[1] for r in rows} & set(truth))
        total += 10
        exact = conn.execute(
            "select image_id from cbir.knn(%s, 'toy', 10, p_exclude_image_id => %s, p_method => 'exact')",
            (syn.vector(q), q),
        ).fetchall()
        assert [r[0] for r in exact] == truth
    assert hits / total >= 0.95


# --------------------------------------------------------------------------- filters
def _mask(syn: Synthetic, *, split=None, dataset=None, modality=None, not_patient=None, not_image=None):
    m = np.ones(len(syn.ids), bool)
    if split:
        m &= np.asarray(syn.splits) == split
    if dataset:
        m &= np.asarray(syn.datasets) == dataset
    if modality:
        m &= np.asarray(syn.modalities) == modality
    if not_patient is not None:
        m &= np.asarray(syn.patients) != not_patient
    if not_image is not None:
        m &= np.asarray(syn.ids) != not_image
    return m


def test_filtered_query_returns_k_rows_where_k_match(db: str, syn: Synthetic, conn):
    build(db)
    q = syn.ids[3]
    filters = {"split": "test", "dataset": "beta", "modality": "MR"}
    mask = _mask(syn, **filters, not_image=q)
    matching = int(mask.sum())
    assert 20 < matching < 150  # a selective filter: most index candidates are filtered out
    for k in (10, matching):
        rows = similar(conn, q, k, **filters)
        assert len(rows) == k
        ids = [r[1] for r in rows]
        assert all(mask[syn.ids.index(i)] for i in ids)
        truth = exact_top_k(syn, syn.vector(q), k, mask)
        assert len(set(ids) & set(truth)) >= 0.9 * k
    # asking for more than exist returns all that exist, no more
    assert len(similar(conn, q, matching + 25, **filters)) == matching


def test_short_index_scan_falls_back_to_exact(db: str, syn: Synthetic, conn):
    """With max_scan_tuples tiny, the iterative index scan gives up early; the function notices the
    short result and re-runs exactly, so the filter still returns k rows."""
    build(db)
    conn.execute("set hnsw.max_scan_tuples = 20")
    q = syn.ids[7]
    mask = _mask(syn, split="val", dataset="alpha", not_image=q)
    k = min(15, int(mask.sum()))
    rows = similar(conn, q, k, split="val", dataset="alpha")
    assert [r[1] for r in rows] == exact_top_k(syn, syn.vector(q), k, mask)


def test_exclude_same_patient_and_self(db: str, syn: Synthetic, conn):
    build(db)
    q = syn.ids[11]
    patient = syn.patients[11]
    rows = similar(conn, q, 50, exclude_same_patient=True)
    assert len(rows) == 50
    patients = dict(conn.execute("select id, patient_id from cbir.image").fetchall())
    assert all(patients[r[1]] != patient for r in rows)
    truth = exact_top_k(syn, syn.vector(q), 50, _mask(syn, not_patient=patient))
    assert len({r[1] for r in rows} & set(truth)) >= 45
    with_self = similar(conn, q, 3, exclude_self=False)
    assert with_self[0][1] == q and with_self[0][2] == pytest.approx(1.0, abs=1e-5)


def test_excluded_images_never_returned(db: str, syn: Synthetic, conn):
    build(db)
    q = syn.ids[0]
    first = similar(conn, q, 5)
    conn.execute(
        "update cbir.image set excluded = true, exclusion_reason = 'duplicate' where id = any(%s)",
        ([r[1] for r in first[:2]],),
    )
    again = similar(conn, q, 5)
    assert len(again) == 5
    assert not {r[1] for r in first[:2]} & {r[1] for r in again}


# --------------------------------------------------------------------------- hostile input
@pytest.mark.parametrize(
    "model",
    ["toy'; drop table cbir.image; --", 'toy"; select 1; --', "Toy", "toy;", "nope", "", "embedding_toy"],
)
def test_model_carrying_sql_is_rejected(db: str, syn: Synthetic, conn, model: str):
    with pytest.raises((psycopg.errors.InvalidParameterValue, psycopg.errors.NoDataFound)):
        similar(conn, syn.ids[0], 5, model=model)
    conn.rollback()
    with pytest.raises((psycopg.errors.InvalidParameterValue, psycopg.errors.NoDataFound)):
        conn.execute("select * from cbir.similar_to_vector(%s, %s, 5)", (syn.vector(syn.ids[0]), model))
    conn.rollback()
    assert conn.execute("select count(*) from cbir.image").fetchone()[0] == len(syn.ids)


@pytest.mark.parametrize(
    "filters",
    [
        {"split": "train'; drop table cbir.image; --"},
        {"split": "TRAIN"},
        {"dataset": "alpha' or '1'='1"},
        {"dataset": "alpha; select 1"},
        {"modality": "CT'; drop table cbir.image; --"},
        {"modality": "CT; select 1"},
    ],
)
def test_filter_carrying_sql_is_rejected(db: str, syn: Synthetic, conn, filters: dict):
    with pytest.raises(psycopg.errors.InvalidParameterValue):
        similar(conn, syn.ids[0], 5, **filters)
    conn.rollback()
    assert conn.execute("select count(*) from cbir.image").fetchone()[0] == len(syn.ids)


def test_bad_arguments_are_clear_errors(db: str, syn: Synthetic, conn):
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="k must be"):
        similar(conn, syn.ids[0], 0)
    conn.rollback()
    with pytest.raises(psycopg.errors.NoDataFound, match="does not exist"):
        similar(conn, 10**9, 5)
    conn.rollback()
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="dimensions"):
        conn.execute("select * from cbir.similar_to_vector('[1,2,3]'::vector, 'toy', 5)")
    conn.rollback()
    conn.execute("delete from cbir.embedding_toy where image_id = %s", (syn.ids[0],))
    with pytest.raises(psycopg.errors.NoDataFound, match="no embedding"):
        similar(conn, syn.ids[0], 5)


# --------------------------------------------------------------------------- plans
def _plans(conn, statement: str, params: tuple) -> str:
    """The plans of every statement run inside the SQL functions (auto_explain at NOTICE level)."""
    notices: list[str] = []
    conn.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
    conn.execute("load 'auto_explain'")
    conn.execute("set auto_explain.log_min_duration = 0")
    conn.execute("set auto_explain.log_nested_statements = on")
    conn.execute("set auto_explain.log_level = notice")
    conn.execute(statement, params).fetchall()
    conn.execute("set auto_explain.log_min_duration = -1")
    return "\n".join(n for n in notices if "embedding_toy e" in n and "array_agg" in n)


def test_plan_uses_hnsw_index(db: str, conn):
    syn = make_synthetic(db, n=3000)  # on a few hundred rows an exact scan is rightly cheaper
    build(db)
    for filters in (
        {},
        {"split": "train"},
        {"modality": "CT"},
        {"dataset": "alpha", "exclude_same_patient": True},
    ):
        args = "".join(f", p_{name} => %s" for name in filters)
        plan = _plans(
            conn, f"select * from cbir.similar_images(%s, 'toy', 10{args})", (syn.ids[0], *filters.values())
        )
        assert "Index Scan using embedding_toy_hnsw_idx" in plan, (filters, plan)
        assert "Seq Scan on embedding_toy" not in plan, (filters, plan)


def test_plan_uses_binary_index(db: str, conn):
    syn = make_synthetic(db, n=3000)
    build(db, quantize="binary")
    plan = _plans(conn, "select * from cbir.similar_images(%s, 'toy', 10, p_split => 'train')", (syn.ids[0],))
    assert "Index Scan using embedding_toy_hnsw_bq_idx" in plan, plan


# --------------------------------------------------------------------------- binary and halfvec
def test_binary_quantised_index_reranks_exactly(db: str, syn: Synthetic, conn):
    build(db, quantize="binary")
    space = conn.execute("select ann_index, binary_index from cbir.model_vector_space('toy')").fetchone()
    assert space == (None, "embedding_toy_hnsw_bq_idx")
    q = syn.ids[2]
    for k in (10, 41):
        rows = similar(conn, q, k)
        assert len(rows) == k
        ref = syn.vectors.astype(np.float64) @ syn.vector(q).astype(np.float64)
        for _, image_id, sim in rows:  # re-ranked by exact cosine, not by Hamming distance
            assert sim == pytest.approx(ref[syn.ids.index(image_id)], abs=1e-5)
        assert [r[2] for r in rows] == sorted((r[2] for r in rows), reverse=True)


def test_halfvec_model_above_2000_dims(db: str, conn):
    syn = make_synthetic(db, model="wide", dim=2048, n=150, n_patients=20)
    assert conn.execute("select column_type, opclass from cbir.model_vector_space('wide')").fetchone() == (
        "halfvec",
        "halfvec_cosine_ops",
    )
    build(db, "wide")
    q = syn.ids[0]
    rows = conn.execute(
        "select image_id from cbir.similar_to_vector(%s, 'wide', 41, p_exclude_image_id => %s)",
        (syn.vector(q), q),
    ).fetchall()
    assert len(rows) == 41
    truth = exact_top_k(syn, syn.vector(q), 10, np.asarray(syn.ids) != q)
    assert len({r[0] for r in rows[:10]} & set(truth)) >= 9


def test_vector_column_above_2000_dims_uses_halfvec_expression(db: str, conn):
    """A vector(2100) table (not what create_embedding_table makes, but possible) is indexed as halfvec."""
    syn = make_synthetic(db, model="wide", dim=10, n=5, n_patients=2)  # datasets, patients, labels
    del syn
    conn.execute("delete from cbir.encoder where key = 'wide'")
    conn.execute("drop table cbir.embedding_wide")
    conn.execute(
        "insert into cbir.encoder (key, family, dim, vector_type, config, config_hash, table_name)"
        " values ('vwide', 'synthetic', 2100, 'vector', '{}', 'x', 'embedding_vwide')"
    )
    conn.execute(
        "create table cbir.embedding_vwide (image_id bigint primary key references cbir.image(id), embedding vector(2100))"
    )
    rng = np.random.default_rng(1)
    ids = [r[0] for r in conn.execute("select id from cbir.image order by id").fetchall()]
    vecs = rng.normal(size=(len(ids), 2100)).astype(np.float32)
    for i, v in zip(ids, vecs, strict=True):
        conn.execute("insert into cbir.embedding_vwide values (%s, %s)", (i, v))
    conn.commit()
    build(db, "vwide")
    definition = conn.execute("select pg_get_indexdef('cbir.embedding_vwide_hnsw_idx'::regclass)").fetchone()[
        0
    ]
    assert "halfvec(2100)" in definition and "halfvec_cosine_ops" in definition
    rows = conn.execute("select image_id from cbir.similar_to_vector(%s, 'vwide', 3)", (vecs[0],)).fetchall()
    assert rows[0][0] == ids[0] and len(rows) == 3


# --------------------------------------------------------------------------- docs/sql-api.md
def _doc_examples() -> dict[str, str]:
    text = (REPO / "docs" / "sql-api.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```sql\n(.*?)```", text, re.DOTALL)
    out = {}
    for b in blocks:
        m = re.match(r"-- example: (\w+)\n", b)
        if m:
            out[m.group(1)] = b[m.end() :]
    return out


def test_docs_examples_run_as_written(db: str, conn):
    syn = make_synthetic(db, model="efficientnet_lite0", n=800, n_patients=80)
    build(db, "efficientnet_lite0")
    examples = _doc_examples()
    assert {"ten_neighbours", "by_vector", "cohort_same_sex_age", "label_distribution", "explain"} <= set(
        examples
    )
    results = {}
    for name, text in examples.items():
        cur = None
        for statement in [s for s in text.split(";") if s.strip() and not s.strip().startswith("-- NOTICE")]:
            cur = conn.execute(statement)
        results[name] = cur.fetchall() if cur is not None and cur.description else []
    assert len(results["ten_neighbours"]) == 10
    assert len(results["by_vector"]) == 5
    assert results["recall_one_query"][0][0] >= 9

    # cohort: 10 images of other patients, same sex, age within 10 years of the query's patient
    q = min(i for i, s in zip(syn.ids, syn.splits, strict=True) if s == "test")
    qp = syn.patients[syn.ids.index(q)]
    q_sex, q_age = conn.execute("select sex, age from cbir.patient where id = %s", (qp,)).fetchone()
    cohort = results["cohort_same_sex_age"]
    assert len(cohort) == 10
    assert [r[0] for r in cohort] == list(range(1, 11))
    for row in cohort:
        sex, age = row[5], row[6]
        assert sex == q_sex and abs(age - q_age) <= 10
        assert conn.execute("select patient_id from cbir.image where id = %s", (row[1],)).fetchone()[0] != qp

    dist = results["label_distribution"]
    assert sum(r[1] for r in dist) == 50
    # the query's own class dominates its neighbourhood on clustered data
    q_label = conn.execute(
        "select l.key from cbir.image i join cbir.label l on l.id = i.label_id where i.id = %s", (q,)
    ).fetchone()[0]
    assert dist[0][0] == q_label
