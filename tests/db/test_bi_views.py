"""The dashboard layer: ``cbir_report.neighbours`` (de-identified long-format neighbours, patients only as
sex and 10-year age band) and rounded metric columns, read as ``cbir_reader``."""

from __future__ import annotations

import uuid

import numpy as np
import psycopg
import pytest
from psycopg import sql
from test_sql_api import make_synthetic

from cbir_pg.db.database import Database
from cbir_pg.eval.retrieval import evaluate_retrieval

FORBIDDEN = {
    "patient_key",
    "patient_id",
    "study_key",
    "study_id",
    "uri",
    "root",
    "path",
    "age",
    "query_age",
    "neighbour_age",
}


@pytest.fixture
def evaluated(db: str):
    syn = make_synthetic(db, n=200)
    res = evaluate_retrieval(Database(db), "toy", mode="exact", progress=False)
    with psycopg.connect(db) as conn:  # one patient over 89 to check the top band
        conn.execute(
            "update cbir.patient set age = 93 where id = (select patient_id from cbir.image where id = %s)",
            (syn.ids[0],),
        )
    return syn, res


def test_neighbours_view_is_long_format_and_de_identified(db: str, evaluated) -> None:
    syn, res = evaluated
    run = res.primary
    with psycopg.connect(db) as conn:
        cur = conn.execute("select * from cbir_report.neighbours where run = %s", (run.run_id,))
        cols = [d.name for d in cur.description]
        rows = [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]
        stored = conn.execute(
            "select query_image_id, neighbours, similarities, relevant from cbir.eval_query where run_id = %s",
            (run.run_id,),
        ).fetchall()
        keys = {r[0] for r in conn.execute("select patient_key from cbir.patient")}
        truth = {
            r[0]: (r[1], r[2], r[3])
            for r in conn.execute(
                "select i.id, l.key, p.sex, p.age from cbir.image i join cbir.label l on l.id = i.label_id"
                " join cbir.patient p on p.id = i.patient_id"
            )
        }
    assert cols[:12] == [
        "run",
        "model",
        "mode",
        "dataset",
        "split",
        "query_image",
        "rank",
        "neighbour_image",
        "similarity",
        "query_label",
        "neighbour_label",
        "same_label",
    ]
    assert not FORBIDDEN & set(cols)
    assert len(rows) == sum(len(s[1]) for s in stored) == run.n_queries * 10
    by = {(r["query_image"], r["rank"]): r for r in rows}
    for q, nbrs, sims, rel in stored:
        for rank, (nb, sim, same) in enumerate(zip(nbrs, sims, rel, strict=True), 1):
            r = by[(q, rank)]
            assert r["neighbour_image"] == nb and r["same_label"] == same
            assert abs(r["similarity"] - sim) <= 5e-5 + 1e-7 and r["similarity"] == round(r["similarity"], 4)
            assert r["same_label"] == (
                truth[q][0] == truth[nb][0] == r["query_label"] == r["neighbour_label"]
            )
            sex, age = truth[nb][1], truth[nb][2]
            band = "90+" if age >= 90 else f"{int(age // 10) * 10}-{int(age // 10) * 10 + 9}"
            assert (r["neighbour_sex"], r["neighbour_age_band"]) == (sex, band)
    assert {r["query_age_band"] for r in rows} <= {f"{d}-{d + 9}" for d in range(0, 90, 10)} | {"90+"}
    text = repr(rows)
    assert not [k for k in keys if f"'{k}'" in text]  # no patient key anywhere
    assert "/nonexistent" not in text and ".png" not in text  # no roots or paths


def test_reader_reads_the_bi_views_with_rounded_metrics(db: str, evaluated, pg_server_dsn: str) -> None:
    syn, res = evaluated
    role = f"bi_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_server_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("create role {} login in role cbir_reader").format(sql.Identifier(role)))
    try:
        with psycopg.connect(db) as conn:
            conn.execute(sql.SQL("set role {}").format(sql.Identifier(role)))
            # no dataset granted: the per-image neighbours show nothing (issue 22)
            assert conn.execute("select count(*) from cbir_report.neighbours").fetchone()[0] == 0
            conn.execute("reset role")
            conn.execute(
                "insert into cbir.dataset_grant (dataset_id, role_name) select id, %s from cbir.dataset",
                (role,),
            )
            conn.execute(sql.SQL("set role {}").format(sql.Identifier(role)))
            n = conn.execute("select count(*) from cbir_report.neighbours").fetchone()[0]
            board = conn.execute(
                "select p1_micro, p3_micro, p5_micro, p10_micro, p1_macro, p10_macro from cbir_report.leaderboard"
            ).fetchone()
            classes = conn.execute("select p1, p10 from cbir_report.class_precision").fetchall()
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("select * from cbir.patient")
    finally:
        with psycopg.connect(pg_server_dsn, autocommit=True) as admin:
            admin.execute(sql.SQL("drop role {}").format(sql.Identifier(role)))
    assert n == res.primary.n_queries * 10
    values = [v for v in board] + [v for row in classes for v in row if v is not None]
    assert values and all(v == round(v, 4) for v in values)  # shown as they are
    np.testing.assert_allclose(board[0], res.primary.summary.micro[0], atol=5e-5)
