"""Fusion, alpha-QE, k-reciprocal re-ranking (sql/schema/25_fusion.sql, eval/fusion.py) and the text
path (search --text, eval zeroshot) on real data: the MedMNIST benchmark with its efficientnet_lite0
vectors, plus ``tiny_clip`` (an open_clip CLIP with seeded random weights, image and text towers)
ingested for BreastMNIST in this module's own clone. Every ranking is checked against NumPy."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psycopg
import pytest
from dbhelp import cbir_pg

from cbir_pg.db.connect import connect
from cbir_pg.db.database import Database

pytestmark = [pytest.mark.real_data, pytest.mark.slow]

A, B = "efficientnet_lite0", "tiny_clip"
DS = "breastmnist"


@pytest.fixture(scope="module")
def fdb(pg_server_dsn: str, medmnist_lite0_template: str) -> Iterator[str]:
    """A clone of the real-data template with tiny_clip vectors for BreastMNIST (one per module)."""
    from psycopg import sql
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    from cbir_pg.ingest.worker import run_ingest

    name = f"f_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server_dsn, autocommit=True) as c:
        c.execute(
            sql.SQL("create database {} template {}").format(
                sql.Identifier(name), sql.Identifier(medmnist_lite0_template)
            )
        )
    dsn = make_conninfo(**{**conninfo_to_dict(pg_server_dsn), "dbname": name})
    run_ingest(Database(dsn), B, datasets=[DS], progress=False, batch_size=64)
    yield dsn
    with psycopg.connect(pg_server_dsn, autocommit=True) as c:
        c.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name)))


def _vectors(dsn: str, model: str, split: str | None) -> dict[int, np.ndarray]:
    with connect(dsn) as c:
        rows = c.execute(
            f"select e.image_id, e.embedding from cbir.embedding_{model} e join cbir.image i on i.id = e.image_id"
            " join cbir.dataset d on d.id = i.dataset_id where d.key = %s and not i.excluded"
            " and (%s::text is null or i.split = %s)",
            (DS, split, split),
        ).fetchall()
    return {
        int(i): np.asarray(v.to_numpy() if hasattr(v, "to_numpy") else v, dtype=np.float64) for i, v in rows
    }


def _labels(dsn: str) -> dict[int, int]:
    with connect(dsn) as c:
        return {
            int(i): (lab if lab is not None else -1)
            for i, lab in c.execute("select id, label_id from cbir.image")
        }


def _cos(q: np.ndarray, X: np.ndarray) -> np.ndarray:
    return (X @ q) / (np.linalg.norm(X, axis=1) * np.linalg.norm(q))


def _topk(q: np.ndarray, ids: np.ndarray, X: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    s = _cos(q, X)
    order = np.lexsort((ids, -s))[:k]  # similarity desc, then image id
    return ids[order], s[order]


def _column(c, query: str, params) -> list:
    """The first column of a query's rows."""
    return [r[0] for r in c.execute(query, params)]


def _cli(dsn: str, *args: str, columns: str = "200", timeout: int = 600) -> subprocess.CompletedProcess:
    """``python -m cbir_pg --dsn DSN ARGS`` in a terminal ``columns`` wide."""
    return cbir_pg("--dsn", dsn, *args, env=dict(os.environ, COLUMNS=columns), timeout=timeout)


@pytest.fixture(scope="module")
def spaces(fdb: str):
    """Train (index) vectors of both models, restricted to images with both, and some test queries."""
    ta, tb = _vectors(fdb, A, "train"), _vectors(fdb, B, "train")
    ids = np.array(sorted(set(ta) & set(tb)), dtype=np.int64)
    qa, qb = _vectors(fdb, A, "test"), _vectors(fdb, B, "test")
    queries = sorted(set(qa) & set(qb))[:12]
    return {
        "ids": ids,
        "XA": np.stack([ta[i] for i in ids]),
        "XB": np.stack([tb[i] for i in ids]),
        "qA": {i: qa[i] for i in queries},
        "qB": {i: qb[i] for i in queries},
        "queries": queries,
    }


def _fused_ref(sp, qid: int, k: int, method: str, c: float = 60.0, kp: int = 40):
    ids = sp["ids"]
    la, _ = _topk(sp["qA"][qid], ids, sp["XA"], kp)
    lb, _ = _topk(sp["qB"][qid], ids, sp["XB"], kp)
    union = np.array(sorted(set(la) | set(lb)), dtype=np.int64)
    pos = {int(i): j for j, i in enumerate(ids)}
    sa = _cos(sp["qA"][qid], sp["XA"][[pos[int(i)] for i in union]])
    sb = _cos(sp["qB"][qid], sp["XB"][[pos[int(i)] for i in union]])
    if method == "rrf":
        ra = {int(i): r + 1 for r, i in enumerate(la)}
        rb = {int(i): r + 1 for r, i in enumerate(lb)}
        score = np.array(
            [
                (1 / (c + ra[int(i)]) if int(i) in ra else 0) + (1 / (c + rb[int(i)]) if int(i) in rb else 0)
                for i in union
            ]
        )
    else:
        score = (sa + sb) / 2
    order = np.lexsort((union, -score))[:k]
    return union[order], score[order], np.stack([sa, sb], axis=1)[order]


@pytest.mark.parametrize("method", ["rrf", "mean"])
def test_similar_images_fused_matches_numpy(fdb: str, spaces, method: str) -> None:
    with connect(fdb) as c:
        for qid in spaces["queries"][:6]:
            rows = c.execute(
                "select rank, image_id, score, similarities from cbir.similar_images_fused(%s, %s, 10,"
                " p_split => 'train', p_dataset => %s, p_method => %s, p_search => 'exact')",
                (qid, [A, B], DS, method),
            ).fetchall()
            ref_ids, ref_score, ref_sims = _fused_ref(spaces, qid, 10, method)
            assert [r[0] for r in rows] == list(range(1, 11))
            assert [r[1] for r in rows] == ref_ids.tolist()
            np.testing.assert_allclose([r[2] for r in rows], ref_score, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(np.array([r[3] for r in rows]), ref_sims, atol=1e-5)


def test_fused_ann_gives_k_rows_and_the_vector_form_agrees(fdb: str, spaces) -> None:
    qid = spaces["queries"][0]
    with connect(fdb) as c:
        img = c.execute(
            "select image_id, score from cbir.similar_images_fused(%s, %s, 7, p_split => 'train', p_dataset => %s)",
            (qid, [A, B], DS),
        ).fetchall()
        vec = c.execute(
            "select image_id, score from cbir.similar_to_vectors_fused("
            " array[(select embedding from cbir.embedding_efficientnet_lite0 where image_id = %(q)s),"
            "       (select embedding from cbir.embedding_tiny_clip where image_id = %(q)s)],"
            " %(m)s, 7, 'train', %(ds)s, null, null, %(q)s)",
            {"q": qid, "m": [A, B], "ds": DS},
        ).fetchall()
    assert len(img) == 7 and img == vec
    assert qid not in [r[0] for r in img]


def test_fused_fetches_more_candidates_when_members_miss_vectors(fdb: str, spaces) -> None:
    """Crowd both top lists with images that lack the other model's vector: still exactly k rows."""
    qid = spaces["queries"][1]
    with connect(fdb) as c:
        c.execute(
            "delete from cbir.embedding_tiny_clip where image_id in (select image_id from"
            " cbir.similar_images(%s, %s, 30, 'train', %s))",
            (qid, A, DS),
        )
        c.execute(
            "delete from cbir.embedding_efficientnet_lite0 where image_id in (select image_id from"
            " cbir.similar_images(%s, %s, 30, 'train', %s))",
            (qid, B, DS),
        )
        rows = c.execute(
            "select image_id from cbir.similar_images_fused(%s, %s, 10, 'train', %s, p_candidates => 10,"
            " p_search => 'exact')",
            (qid, [A, B], DS),
        ).fetchall()
        ids = [r[0] for r in rows]
        both = c.execute(
            "select count(*) from cbir.embedding_efficientnet_lite0 a join cbir.embedding_tiny_clip b"
            " using (image_id) where image_id = any(%s)",
            (ids,),
        ).fetchone()[0]
        c.rollback()
    assert len(ids) == 10 and both == 10


def test_rrf_passes_over_a_best_candidate_without_every_models_vector(fdb: str, spaces) -> None:
    """rrf looks up only its best k candidates; when one of them lacks a model's vector, every candidate
    is scored, and the rows are the reference's among the images with both vectors."""
    qid = spaces["queries"][2]
    ref_ids, _, _ = _fused_ref(spaces, qid, 10, "rrf")
    gone = int(ref_ids[0])  # the best candidate by rrf loses its second model's vector
    sp = dict(spaces)
    keep = spaces["ids"] != gone
    la, _ = _topk(sp["qA"][qid], sp["ids"], sp["XA"], 40)
    lb, _ = _topk(sp["qB"][qid], sp["ids"][keep], sp["XB"][keep], 40)
    ra = {int(i): r + 1 for r, i in enumerate(la)}
    rb = {int(i): r + 1 for r, i in enumerate(lb)}
    union = sorted((set(ra) | set(rb)) - {gone})
    score = {i: (1 / (60 + ra[i]) if i in ra else 0) + (1 / (60 + rb[i]) if i in rb else 0) for i in union}
    want = sorted(union, key=lambda i: (-score[i], i))[:10]
    with connect(fdb) as c:
        c.execute("delete from cbir.embedding_tiny_clip where image_id = %s", (gone,))
        rows = c.execute(
            "select image_id, score from cbir.similar_images_fused(%s, %s, 10, 'train', %s, p_search => 'exact')",
            (qid, [A, B], DS),
        ).fetchall()
        c.rollback()
    assert [r[0] for r in rows] == want and gone not in want
    np.testing.assert_allclose([r[1] for r in rows], [score[i] for i in want], rtol=1e-9)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        ("cbir.similar_images_fused(%(q)s, array['efficientnet_lite0', 'efficientnet_lite0'])", "distinct"),
        (
            "cbir.similar_images_fused(%(q)s, array['efficientnet_lite0', 'tiny_clip'], p_method => 'max')",
            "unknown fusion method",
        ),
        ("cbir.similar_images_fused(%(q)s, array['efficientnet_lite0', 'nope'])", "unknown model"),
        (
            "cbir.similar_images_fused(%(q)s, array['efficientnet_lite0', 'x; drop table cbir.image'])",
            "invalid model name",
        ),
        (
            "cbir.similar_images_fused(%(q)s, array['efficientnet_lite0'], 10, p_candidates => 5)",
            "candidates",
        ),
        ("cbir.similar_images_expanded(%(q)s, 'efficientnet_lite0', p_m => -1)", "expansion m"),
        ("cbir.similar_images_reranked(%(q)s, 'efficientnet_lite0', p_lambda => 2)", "lambda"),
    ],
)
def test_fusion_api_refuses_bad_parameters(fdb: str, spaces, call: str, message: str) -> None:
    with connect(fdb) as c, pytest.raises(psycopg.Error, match=message):
        c.execute(f"select * from {call}", {"q": spaces["queries"][0]}).fetchall()


def _aqe_ref(q: np.ndarray, ids: np.ndarray, X: np.ndarray, m: int, alpha: float, k: int) -> np.ndarray:
    nb, s = _topk(q, ids, X, m)
    pos = {int(i): j for j, i in enumerate(ids)}
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    q2 = q / np.linalg.norm(q) + sum(
        max(sj, 0) ** alpha * Xn[pos[int(i)]] for i, sj in zip(nb, s, strict=True)
    )
    return _topk(q2, ids, X, k)[0]


def _check_against_numpy(fdb: str, qids, call: str, reference) -> None:
    """``select image_id from cbir.<call>`` with (query id, lite0, the dataset) equals ``reference(qid)``
    for each query."""
    with connect(fdb) as c:
        for qid in qids:
            got = _column(c, f"select image_id from cbir.{call}", (qid, A, DS))
            assert got == reference(qid).tolist()


def test_expanded_matches_numpy_with_neighbours_from_the_index_split(fdb: str, spaces) -> None:
    ids, X = spaces["ids"], spaces["XA"]
    # the index here is train images with both models' vectors; lite0 alone has the same train set
    _check_against_numpy(
        fdb,
        spaces["queries"][:5],
        "similar_images_expanded(%s, %s, 10, 'train', %s, p_m => 3, p_alpha => 2, p_search => 'exact')",
        lambda qid: _aqe_ref(spaces["qA"][qid], ids, X, 3, 2.0, 10),
    )


def _krr_ref(
    q: np.ndarray, ids: np.ndarray, X: np.ndarray, k: int, k1: int, lam: float, kp: int
) -> np.ndarray:
    cand, s = _topk(q, ids, X, kp)
    pos = {int(i): j for j, i in enumerate(ids)}
    P = np.vstack([q[None, :], X[[pos[int(i)] for i in cand]]])
    P = P / np.linalg.norm(P, axis=1, keepdims=True)
    W = P @ P.T
    names = np.r_[-1, cand]
    n = len(names)
    nn = []
    for a in range(n):
        others = [b for b in range(n) if b != a]
        order = sorted(others, key=lambda b: (-W[a, b], names[b]))
        nn.append({a, *order[:k1]})
    rec = [{b for b in nn[a] if a in nn[b]} for a in range(n)]
    jac = np.array([len(rec[0] & rec[j]) / max(len(rec[0] | rec[j]), 1) for j in range(1, n)])
    score = (1 - lam) * jac + lam * s
    return cand[np.lexsort((cand, -score))[:k]]


def test_reranked_matches_numpy(fdb: str, spaces) -> None:
    ids, X = spaces["ids"], spaces["XA"]
    _check_against_numpy(
        fdb,
        spaces["queries"][:4],
        "similar_images_reranked(%s, %s, 10, 'train', %s,"
        " p_k1 => 6, p_lambda => 0.3, p_candidates => 30, p_search => 'exact')",
        lambda qid: _krr_ref(spaces["qA"][qid], ids, X, 10, 6, 0.3, 30),
    )


def test_eval_fuse_stores_its_own_leaderboard_row_with_numpy_precision(fdb: str, spaces) -> None:
    from cbir_pg.eval.fusion import Ranking, evaluate_ranking

    r = evaluate_ranking(
        Database(fdb),
        Ranking((A, B), fusion="mean"),
        index_split="train",
        query_splits=("test",),
        datasets=[DS],
        mode="exact",
    )
    assert r.model == "mean(efficientnet_lite0,tiny_clip)"
    labels = _labels(fdb)
    ids = spaces["ids"]
    qa, qb = _vectors(fdb, A, "test"), _vectors(fdb, B, "test")
    queries = sorted(i for i in set(qa) & set(qb) if labels[i] >= 0)
    assert r.n_queries == len(queries) and r.n_index == len(ids)
    sp = dict(spaces, qA=qa, qB=qb)
    sizes = {lab: sum(1 for i in ids if labels[int(i)] == lab) for lab in set(labels.values())}
    p1 = [float(labels[int(_fused_ref(sp, q, 1, "mean")[0][0])] == labels[q]) for q in queries]
    p5 = []
    for q in queries:
        top = _fused_ref(sp, q, 5, "mean")[0]
        n = min(5, sizes[labels[q]])
        p5.append(sum(labels[int(i)] == labels[q] for i in top[:n]) / n)
    with connect(fdb) as c:
        row = c.execute(
            "select p1_micro, p5_micro, mode, scope from cbir_report.leaderboard where model = %s", (r.model,)
        ).fetchone()
        params = c.execute("select params from cbir.eval_run where id = %s", (r.run_id,)).fetchone()[0]
    assert row[2] == "exact" and row[3] == f"{DS}:train->test"
    # the leaderboard shows 4 decimals
    assert row[0] == pytest.approx(np.mean(p1), abs=5e-5) and row[1] == pytest.approx(np.mean(p5), abs=5e-5)
    assert params["models"] == [A, B] and params["fusion"] == "mean"


def test_eval_expand_rerank_ann_and_cli(fdb: str) -> None:
    from cbir_pg.eval.fusion import Ranking, evaluate_ranking

    aqe = evaluate_ranking(
        Database(fdb), Ranking((A,), expand=(2, 3.0)), query_splits=("val",), datasets=[DS], mode="ann"
    )
    krr = evaluate_ranking(
        Database(fdb),
        Ranking((A,), rerank=(10, 0.3), expand=(2, 3.0)),
        query_splits=("val",),
        datasets=[DS],
        mode="exact",
    )
    assert aqe.model == "efficientnet_lite0+aqe(m=2,alpha=3)"
    assert krr.model == "efficientnet_lite0+aqe(m=2,alpha=3)+krr(k1=10,lambda=0.3)"
    assert (aqe.topn.counts == 10).all() and (krr.topn.counts == 10).all()
    # the stored AQE ranking of a query equals the SQL API's answer for it (neighbours from train only)
    q = int(aqe.topn.query_ids[0])
    with connect(fdb) as c:
        stored = c.execute(
            "select neighbours from cbir.eval_query where run_id = %s and query_image_id = %s",
            (aqe.run_id, q),
        ).fetchone()[0]
        direct = _column(
            c,
            "select image_id from cbir.similar_images_expanded(%s, %s, 10, 'train', %s, p_m => 2, p_alpha => 3)",
            (q, A, DS),
        )
        splits = set(_column(c, "select split from cbir.image where id = any(%s)", (stored,)))
    assert stored == direct and splits == {"train"}
    out = _cli(
        fdb,
        *("eval", "retrieval", "--fuse", f"{A},{B}", "--fusion", "rrf", "--dataset", DS),
        *("--query-split", "val", "--mode", "exact"),
    )
    assert out.returncode == 0, out.stderr
    assert "rrf(efficientnet_lite0,tiny_clip)" in out.stdout
    bad = _cli(fdb, "eval", "retrieval", "--fuse", f"{A},{B}", "--rerank", "10,0.3")
    assert bad.returncode == 1 and bad.stderr.strip().count("\n") == 0 and "one model" in bad.stderr


# --------------------------------------------------------------------------- text to image
def test_text_search_matches_numpy_and_other_models_refuse(fdb: str) -> None:
    from cbir_pg.encoders.text import create_text_encoder, embed_texts
    from cbir_pg.errors import ConfigError
    from cbir_pg.search import search_text

    text = "an ultrasound image of malignant in the breast"
    hits = search_text(Database(fdb), B, text, k=8, split="test")
    t = embed_texts(create_text_encoder(B), [text])[0].astype(np.float64)
    vecs = _vectors(fdb, B, "test")
    ids = np.array(sorted(vecs), dtype=np.int64)
    ref_ids, ref_s = _topk(t, ids, np.stack([vecs[i] for i in ids]), 8)
    assert [h.image_id for h in hits] == ref_ids.tolist()
    np.testing.assert_allclose([h.similarity for h in hits], ref_s, atol=1e-5)
    with pytest.raises(ConfigError, match="has no text tower"):
        search_text(Database(fdb), A, text)
    # the Python façade gives the same neighbours as a DataFrame
    import cbir_pg

    df = cbir_pg.connect(fdb).search_text(text, B, k=8, split="test")
    assert df["image_id"].tolist() == ref_ids.tolist() and df["rank"].tolist() == list(range(1, 9))
    out = _cli(fdb, "search", "--text", text, "--model", B, "-k", "3", "--split", "test")
    assert out.returncode == 0, out.stderr
    assert str(ref_ids[0]) in out.stdout
    refused = _cli(fdb, "search", "--text", text, "--model", A)
    assert refused.returncode == 1 and "no text tower" in refused.stderr
    assert refused.stderr.strip().count("\n") == 0


def test_zeroshot_run_is_stored_matches_numpy_and_is_reported(fdb: str, tmp_path: Path) -> None:
    from cbir_pg.encoders.text import create_text_encoder, embed_texts
    from cbir_pg.eval.report import write_report
    from cbir_pg.eval.zeroshot import evaluate_zeroshot, prompt_for

    r = evaluate_zeroshot(Database(fdb), B, split="test", datasets=[DS], ns=(1, 5))
    labels = _labels(fdb)
    vecs = _vectors(fdb, B, "test")
    ids = np.array(sorted(i for i in vecs if labels[i] >= 0), dtype=np.int64)
    X = np.stack([vecs[i] for i in ids])
    with connect(fdb) as c:
        cls = c.execute(
            "select id, key, modality, region, finding from cbir.label where id = any(%s) order by key",
            (sorted({labels[int(i)] for i in ids}),),
        ).fetchall()
    prompts = [prompt_for("a {modality} image of {finding} in the {region}", *row[1:]) for row in cls]
    assert r.prompts == prompts and prompts[0].startswith("a ultrasound image of")
    T = embed_texts(create_text_encoder(B), prompts).astype(np.float64)
    S = (X / np.linalg.norm(X, axis=1, keepdims=True)) @ T.T
    truth = np.array([labels[int(i)] for i in ids])
    pred = np.array([cls[j][0] for j in S.argmax(axis=1)])
    assert r.accuracy == pytest.approx(float((pred == truth).mean()))
    for j, row in enumerate(cls):
        top = ids[np.lexsort((ids, -S[:, j]))[:5]]
        n = min(5, int((truth == row[0]).sum()))
        assert r.class_precision[j, 1] == pytest.approx(sum(labels[int(i)] == row[0] for i in top[:n]) / n)
    with connect(fdb) as c:
        view = c.execute(
            "select accuracy, p1_mean, n_classes from cbir_report.zeroshot where model = %s", (B,)
        ).fetchone()
        per_class = c.execute(
            "select count(*) from cbir_report.zeroshot_class where run_id = %s", (r.run_id,)
        ).fetchone()[0]
    assert view[0] == pytest.approx(r.accuracy) and view[2] == len(cls) and per_class == len(cls)
    report = write_report(Database(fdb), tmp_path / "rep", models=[B], tsne_sample=0, grid_queries=0)
    page = report.index.read_text()
    assert "zero-shot classification" in page and prompts[0] in page


def test_demo_prints_a_fused_row_beside_the_single_model_rows(
    medmnist_lite0_db: str, medmnist_dir: Path, tmp_path: Path
) -> None:
    """`cbir-pg demo --fuse-with KEY` embeds the second model too and prints its rrf row in Table 2."""
    out = _cli(
        medmnist_lite0_db,
        *("demo", "--data-dir", str(medmnist_dir), "--out", str(tmp_path / "report")),
        *("--no-progress", "--fuse-with", B),
        columns="220",
        timeout=3000,
    )
    assert out.returncode == 0, out.stderr
    fused = f"rrf({A},{B})"
    assert f"fused row: {fused}" in out.stdout
    # every comparison the demo prints is a paired difference with its interval
    for key in (A, B):
        assert f"fused minus {key}, P@1 (95% paired bootstrap interval): micro " in out.stdout
    with connect(medmnist_lite0_db) as c:
        rows = {r[0]: r[1] for r in c.execute("select model, p1_micro from cbir_report.leaderboard")}
    assert {A, B, fused} <= set(rows)
    table_lines = [line for line in out.stdout.splitlines() if line.strip().startswith((A, B, fused))]
    assert any(line.strip().startswith(fused) and f"{rows[fused]:.4f}" in line for line in table_lines)
    assert any(line.strip().startswith(A) for line in table_lines)
