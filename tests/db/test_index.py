"""``cbir_pg.index`` and ``cbir-pg index``: build (full precision, binary, concurrently), status, drop,
recall against exact search, and refusal of bad names and parameters."""

from __future__ import annotations

import os
import subprocess

import pytest
from dbhelp import cbir_pg
from test_sql_api import make_synthetic

from cbir_pg.db.database import Database
from cbir_pg.errors import ConfigError, NotFoundError
from cbir_pg.index import build_index, drop_index, estimate_graph_mb, index_recall, index_status


@pytest.fixture
def toy(db: str):
    return make_synthetic(db, n=600)


def test_build_reports_and_status_matches(db: str, toy, conn):
    seen = []
    report = build_index(
        Database(db), "toy", m=8, ef_construction=32, progress=seen.append, recall_queries=30
    )
    assert report.index_name == "embedding_toy_hnsw_idx"
    # default storage: halfvec (measured fastest at equal recall, docs/benchmarks.md)
    assert report.kind == "hnsw" and report.opclass == "halfvec_cosine_ops"
    assert report.rows == 600 and report.dim == 16
    assert report.size_bytes > 0 and report.build_seconds >= 0
    assert report.recall_queries == 30 and report.recall_at_10 >= 0.9
    # maintenance_work_mem was sized for the build (never lowered below the server's setting)
    assert report.maintenance_work_mem_mb >= estimate_graph_mb(600, 16, 8)

    [status] = index_status(Database(db), "toy")
    assert status.index_name == report.index_name and status.valid
    assert (status.m, status.ef_construction) == (8, 32)
    assert status.size_bytes == report.size_bytes and status.rows == 600
    assert "hnsw" in status.definition and "halfvec_cosine_ops" in status.definition
    assert status.storage == "halfvec"
    assert status.progress is None  # no build running now
    # ANALYZE ran: the planner knows the row count
    assert (
        conn.execute("select reltuples from pg_class where oid = 'cbir.embedding_toy'::regclass").fetchone()[
            0
        ]
        == 600
    )


def test_storage_vector_is_an_option_and_search_follows_the_index(db: str, toy, conn):
    from cbir_pg.eval.topn import search_expressions

    report = build_index(Database(db), "toy", storage="vector", recall_queries=30, progress=False)
    assert report.opclass == "vector_cosine_ops" and report.recall_at_10 >= 0.9
    [status] = index_status(Database(db), "toy")
    assert status.storage == "vector"
    space = conn.execute("select distance_expr, opclass from cbir.model_vector_space('toy')").fetchone()
    assert space == ("e.embedding", "vector_cosine_ops")
    assert [str(x.as_string(conn)) for x in search_expressions(conn, "toy")] == ["e.embedding", "q.embedding"]

    build_index(Database(db), "toy", recall_queries=0, progress=False)  # default: halfvec
    conn.commit()
    space = conn.execute("select distance_expr, opclass from cbir.model_vector_space('toy')").fetchone()
    assert space == ("(e.embedding::halfvec(16))", "halfvec_cosine_ops")
    e_vec, q_vec = search_expressions(conn, "toy")
    assert e_vec.as_string(conn) == "(e.embedding::halfvec(16))"
    conn.execute("set enable_seqscan = off")  # 600 rows: make the planner show whether the index fits
    plan = "\n".join(
        r[0]
        for r in conn.execute(
            "explain select image_id from cbir.embedding_toy e order by (e.embedding::halfvec(16)) <=>"
            " (select embedding from cbir.embedding_toy limit 1)::halfvec(16) limit 10"
        )
    )
    assert "embedding_toy_hnsw_idx" in plan
    with pytest.raises(ConfigError, match="unknown storage"):
        build_index(Database(db), "toy", storage="float8", progress=False)


def test_rebuild_replaces_and_binary_replaces_full(db: str, toy):
    build_index(Database(db), "toy", recall_queries=0, progress=False)
    again = build_index(Database(db), "toy", m=12, recall_queries=0, progress=False)
    assert [s.m for s in index_status(Database(db), "toy")] == [12]
    assert again.dropped == []

    binary = build_index(Database(db), "toy", quantize="binary", recall_queries=50, progress=False)
    assert binary.kind == "hnsw_bq" and binary.opclass == "bit_hamming_ops"
    assert binary.dropped == ["embedding_toy_hnsw_idx"]
    assert 0.0 < binary.recall_at_10 <= 1.0
    [status] = index_status(Database(db), "toy")
    assert status.kind == "hnsw_bq" and "binary_quantize" in status.definition

    assert drop_index(Database(db), "toy") == ["embedding_toy_hnsw_bq_idx"]
    [status] = index_status(Database(db), "toy")
    assert status.index_name is None and status.rows == 600
    assert drop_index(Database(db), "toy") == []


def test_concurrent_build(db: str, toy):
    report = build_index(Database(db), "toy", concurrently=True, recall_queries=20, progress=False)
    [status] = index_status(Database(db), "toy")
    assert status.valid and status.index_name == report.index_name
    assert report.recall_at_10 >= 0.9


def test_recall_is_one_against_itself_without_index(db: str, toy):
    # no index: the "hnsw" query shape runs as an exact scan, so it must agree with exact search fully
    recall, n = index_recall(Database(db), "toy", method="hnsw", queries_n=15)
    assert n == 15 and recall == 1.0


@pytest.mark.parametrize("model", ["toy'; drop table cbir.image; --", "Toy", "toy;select"])
def test_bad_model_names_rejected(db: str, toy, conn, model: str):
    with pytest.raises(ConfigError):
        build_index(Database(db), model)
    with pytest.raises(ConfigError):
        index_status(Database(db), model)
    with pytest.raises(ConfigError):
        drop_index(Database(db), model)
    assert conn.execute("select count(*) from cbir.image").fetchone()[0] == 600


def test_unknown_model_and_bad_parameters(db: str, toy):
    with pytest.raises(NotFoundError):
        build_index(Database(db), "nope")
    with pytest.raises(NotFoundError):
        index_status(Database(db), "nope")
    with pytest.raises(ConfigError):
        build_index(Database(db), "toy", m=1)
    with pytest.raises(ConfigError):
        build_index(Database(db), "toy", m=16, ef_construction=16)
    with pytest.raises(ConfigError):
        build_index(Database(db), "toy", quantize="pq")


def test_index_cli(db: str, toy):
    def run(*args: str) -> subprocess.CompletedProcess:
        return cbir_pg("--dsn", db, "index", *args, env={**os.environ, "COLUMNS": "200"}, timeout=120)

    out = run("build", "--model", "toy", "--m", "8", "--ef-construction", "40", "--recall-queries", "10")
    assert out.returncode == 0, out.stderr
    assert "embedding_toy_hnsw_idx" in out.stdout and "recall@10" in out.stdout
    out = run("status")
    assert out.returncode == 0, out.stderr
    assert "embedding_toy_hnsw_idx" in out.stdout and "toy" in out.stdout
    out = run("build", "--model", "toy'; drop table x; --")
    assert out.returncode == 1 and "invalid model name" in out.stderr
    out = run("drop", "--model", "toy")
    assert out.returncode == 0 and "dropped embedding_toy_hnsw_idx" in out.stdout
