"""P2, storage types: which pgvector HNSW configuration answers a top-10 fastest at recall@10 >= 0.98.

Same vectors, same table (``cbir.embedding_<key>``, ``vector(d)``), one index at a time:

- ``vector``: ``hnsw (embedding vector_cosine_ops)`` (round 1's choice);
- ``halfvec``: ``hnsw ((embedding::halfvec(d)) halfvec_cosine_ops)``, half the bytes per graph element,
  queried ``order by embedding::halfvec(d) <=> $1::halfvec(d)``;
- ``bit``: ``hnsw ((binary_quantize(embedding)::bit(d)) bit_hamming_ops)``, 1 bit per dimension, then an
  exact re-rank of the ``ef_search`` candidates by ``embedding <=> $1``.

``m`` in {16, 32}, ``ef_search`` swept; latency p50/p99 (one client, prepared, binary), QPS with 1 and
2 clients, recall@10 against exact search, index size and build time, and FAISS ``IndexHNSWFlat`` with
the same ``m`` at the same ``ef_search`` beside each. The operating point of a configuration is its
smallest ``ef_search`` with recall@10 >= 0.98; the winner has the lowest p50 there.

Also the project's own overhead: ``cbir.similar_images`` (the SQL API) against the bare prepared
``ORDER BY embedding <=> $1 LIMIT k`` statement at the same ``ef_search``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from psycopg import sql

from bench.common import (
    concurrent_qps,
    connect,
    exact_topk,
    hnsw_build_sql,
    latency_summary,
    recall_at_k,
    timed_statements,
)

K = 10
TARGET_RECALL = 0.98
TARGET_FAISS_RATIO = 4.0
TARGET_OVERHEAD = 1.10


STORAGES = ("vector", "halfvec", "bit")


def hnsw_expression(storage: str, dim: int, column: sql.Composable | None = None):
    """The indexed expression and operator class of each storage type."""
    col = column or sql.Identifier("embedding")
    if storage == "vector":
        return col, "vector_cosine_ops"
    if storage == "halfvec":
        return sql.SQL("({}::halfvec({}))").format(col, sql.Literal(dim)), "halfvec_cosine_ops"
    if storage == "bit":
        return sql.SQL("(binary_quantize({})::bit({}))").format(col, sql.Literal(dim)), "bit_hamming_ops"
    raise ValueError(storage)


def order_expression(storage: str, dim: int, query: sql.Composable) -> sql.Composed:
    """``ORDER BY`` expression the index serves, against ``query`` (a ``vector``)."""
    expr, _ = hnsw_expression(storage, dim)
    if storage == "vector":
        return sql.SQL("{} <=> {}").format(expr, query)
    if storage == "halfvec":
        return sql.SQL("{} <=> ({}::halfvec({}))").format(expr, query, sql.Literal(dim))
    return sql.SQL("{} <~> (binary_quantize({})::bit({}))").format(expr, query, sql.Literal(dim))


def topk_query(storage: str, table: sql.Identifier, dim: int, k: int) -> sql.Composed:
    """The bare top-k statement for each storage type; ``bit`` re-ranks its ``ef_search`` Hamming
    candidates by exact cosine (parameter ``%(ef)s``)."""
    q = sql.SQL("%(q)s::vector")
    if storage == "bit":
        return sql.SQL(
            "select c.image_id from (select image_id, embedding from {t} order by {o} limit %(ef)s) c"
            " order by c.embedding <=> {q} limit {k}"
        ).format(t=table, o=order_expression(storage, dim, q), q=q, k=sql.Literal(k))
    return sql.SQL("select image_id from {t} order by {o} limit {k}").format(
        t=table, o=order_expression(storage, dim, q), k=sql.Literal(k)
    )


def index_sql(storage: str, table: str, dim: int, m: int, efc: int = 64) -> sql.Composed:
    expr, ops = hnsw_expression(storage, dim)
    return hnsw_build_sql(table, m, efc, ops, expr=expr, suffix="st_idx")


def topk_sql(storage: str, table: str, dim: int) -> sql.Composed:
    schema, name = table.split(".")
    return topk_query(storage, sql.Identifier(schema, name), dim, K)


def _single(dsn, q, queries, ef, warmup=20):
    return timed_statements(dsn, q, [{"q": v, "ef": ef} for v in queries], ef, warmup=warmup)


def _multi(dsn, q, queries, ef, clients):
    return concurrent_qps(dsn, q, [{"q": v, "ef": ef} for v in queries], ef, clients)


def _faiss(x, queries, truth, m, efs, efc=64):
    import faiss

    from bench.p2_query import faiss_multi_client, faiss_single_client

    t0 = time.perf_counter()
    index = faiss.IndexHNSWFlat(x.shape[1], m, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = efc
    index.add(x)
    build = time.perf_counter() - t0
    out = {}
    for ef in efs:
        lat, found = faiss_single_client(index, queries, ef)
        out[ef] = {
            **latency_summary(lat),
            "recall": round(recall_at_k(found, truth, K), 4),
            "qps_2clients": round(faiss_multi_client(index, queries, ef, 2), 1),
        }
    return {"build_s": round(build, 2), "by_ef": out}


@dataclass
class _StorageSet:
    """The loaded vectors of the storage comparison: stored points, held-out queries, their exact
    top-k (row positions), the table and the map from stored image id to row position."""

    key: str
    table: str
    dim: int
    x: np.ndarray
    queries: np.ndarray
    truth: np.ndarray
    id_to_row: dict[int, int]


def _load_storage_set(dsn: str, n: int, dim: int, n_queries: int) -> _StorageSet:
    """Clustered unit vectors stored in ``cbir.embedding_st<dim>`` (vacuumed), plus held-out queries."""
    from bench.common import clustered_unit_vectors, copy_vectors_numpy, create_vector_table, seed_images

    x, labels = clustered_unit_vectors(n + n_queries, dim, seed=7)
    queries, x = x[:n_queries], x[n_queries:]
    key = f"st{dim}"
    with connect(dsn) as conn:
        ids = seed_images(conn, labels[n_queries:] % 20, np.asarray(["train"] * n), dataset=f"st{dim}")
        table = create_vector_table(conn, key, dim)
        copy_vectors_numpy(conn, table, ids, x)
    with connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("vacuum analyze {}").format(sql.Identifier(*table.split("."))))
    return _StorageSet(
        key=key,
        table=table,
        dim=dim,
        x=x,
        queries=queries,
        truth=exact_topk(x, queries, K),
        id_to_row={int(i): r for r, i in enumerate(ids)},
    )


def _st_index(table: str) -> str:
    return f"cbir.{table.split('.')[1]}_st_idx"


def _drop_st_index(conn, table: str) -> None:
    conn.execute(sql.SQL("drop index if exists {}").format(sql.Identifier(*_st_index(table).split("."))))


def _build_st_index(dsn: str, table: str, storage: str, dim: int, m: int) -> dict[str, float]:
    """Replace the comparison's index by one of ``storage`` and ``m``, prewarmed; its build seconds, its
    size and the table's size without it (MB)."""
    from bench.common import prewarm

    idx = _st_index(table)
    with connect(dsn, autocommit=True) as conn:
        _drop_st_index(conn, table)
        t0 = time.perf_counter()
        conn.execute(index_sql(storage, table, dim, m))
        build_s = time.perf_counter() - t0
        prewarm(conn, table, idx)
        index_bytes = conn.execute("select pg_relation_size(%s::regclass)", (idx,)).fetchone()[0]
        table_bytes = conn.execute(
            "select pg_total_relation_size(%s::regclass) - pg_relation_size(%s::regclass)", (table, idx)
        ).fetchone()[0]
    return {
        "build_s": build_s,
        "index_mb": round(index_bytes / 2**20, 1),
        "table_mb": round(table_bytes / 2**20, 1),
    }


def _sweep(dsn: str, s: _StorageSet, storage: str, ef_values: list[int], fa: dict) -> list[dict]:
    """One row per ``ef_search``: latency, recall@10 and 2-client QPS of the bare top-k, FAISS beside."""
    q = topk_sql(storage, s.table, s.dim)
    sweep = []
    for ef in ef_values:
        lat, found = _single(dsn, q, s.queries, ef)
        rows = [[s.id_to_row[i] for i in f] for f in found]
        f = fa["by_ef"][ef]
        sweep.append(
            {
                "ef_search": ef,
                **latency_summary(lat),
                "recall": round(recall_at_k(rows, s.truth, K), 4),
                "qps_2clients": round(_multi(dsn, q, s.queries, ef, 2), 1),
                "faiss_p50_ms": f["p50_ms"],
                "faiss_p99_ms": f["p99_ms"],
                "faiss_recall": f["recall"],
                "faiss_qps_1client": f["qps_1client"],
                "faiss_qps_2clients": f["qps_2clients"],
            }
        )
    return sweep


def _config(storage: str, m: int, built: dict, fa: dict, sweep: list[dict]) -> dict[str, object]:
    """One configuration's result: its operating point is the smallest ``ef_search`` reaching the
    target recall."""
    op = next((r for r in sweep if r["recall"] >= TARGET_RECALL), None)
    return {
        "storage": storage,
        "m": m,
        "build_s": round(built["build_s"], 2),
        "faiss_build_s": fa["build_s"],
        "index_mb": built["index_mb"],
        "table_mb": built["table_mb"],
        "sweep": sweep,
        "operating_point": op["ef_search"] if op else None,
        "p50_ms": op["p50_ms"] if op else None,
        "faiss_p50_ms": op["faiss_p50_ms"] if op else None,
        "ratio_vs_faiss": round(op["p50_ms"] / op["faiss_p50_ms"], 2) if op else None,
    }


def run_storage(
    dsn: str,
    *,
    n: int,
    dim: int,
    n_queries: int,
    ms: list[int],
    ef_values: list[int],
    storages: list[str],
    log=print,
) -> dict[str, object]:
    s = _load_storage_set(dsn, n, dim, n_queries)
    configs = []
    for m in ms:
        fa = _faiss(s.x, s.queries, s.truth, m, ef_values)
        for storage in storages:
            built = _build_st_index(dsn, s.table, storage, dim, m)
            cfg = _config(storage, m, built, fa, _sweep(dsn, s, storage, ef_values, fa))
            configs.append(cfg)
            log(
                f"  storage {storage} m={m}: build {built['build_s']:.1f}s, index {cfg['index_mb']} MB,"
                f" op ef {cfg['operating_point']}"
                f" p50 {cfg['p50_ms']} ms (FAISS {cfg['faiss_p50_ms']}) ratio {cfg['ratio_vs_faiss']}"
            )
    ok = [c for c in configs if c["p50_ms"] is not None]
    best = min(ok, key=lambda c: c["p50_ms"]) if ok else None
    v16 = next((c for c in configs if c["storage"] == "vector" and c["m"] == 16), None)
    op16 = v16["operating_point"] if v16 else 40
    overhead = run_overhead(dsn, s.table, s.key, s.queries, op16, dim, log=log)
    return {
        "n": n,
        "dim": dim,
        "queries": n_queries,
        "configs": configs,
        "winner": {"storage": best["storage"], "m": best["m"], "ef_search": best["operating_point"]}
        if best
        else None,
        "winner_ratio_vs_faiss": best["ratio_vs_faiss"] if best else None,
        "passed": bool(best) and best["ratio_vs_faiss"] <= TARGET_FAISS_RATIO,
        "overhead": overhead,
    }


def _overhead_cases(storage: str, dim: int, key: str, t: sql.Identifier) -> dict[str, tuple]:
    """The four statements the overhead compares, each with the argument it takes (an id or a vector)."""
    by_id = sql.SQL("(select embedding from {t} where image_id = %(id)s)").format(t=t)
    return {
        "similar_images": (
            sql.SQL("select image_id from cbir.similar_images(%(id)s, {key}, {k})").format(
                key=sql.Literal(key), k=sql.Literal(K)
            ),
            "id",
        ),
        "bare_by_id": (
            sql.SQL("select e.image_id from {t} e where e.image_id <> %(id)s order by {o} limit {k}").format(
                t=t, o=order_expression(storage, dim, by_id), k=sql.Literal(K)
            ),
            "id",
        ),
        "similar_to_vector": (
            sql.SQL("select image_id from cbir.similar_to_vector(%(q)s::vector, {key}, {k})").format(
                key=sql.Literal(key), k=sql.Literal(K)
            ),
            "q",
        ),
        "bare_by_vector": (topk_query(storage, t, dim, K), "q"),
    }


def run_overhead(dsn, table, key, queries, vector_m16_ef, dim, log=print) -> dict[str, object]:
    """The project's own overhead on the product's index (built by :func:`cbir_pg.index.build_index`,
    default storage, m=16): ``cbir.similar_images(id)`` against the bare prepared statement that fetches the
    image's vector and orders by ``embedding <=> vector`` (self excluded), and ``cbir.similar_to_vector``
    against ``ORDER BY embedding <=> $1 LIMIT k``; same ``ef_search`` (``cbir.knn`` raises it to at
    least 40, so both run at ``max(operating point, 40)``)."""
    from cbir_pg.db.database import Database
    from cbir_pg.index import DEFAULT_STORAGE, build_index

    storage = DEFAULT_STORAGE
    with connect(dsn, autocommit=True) as conn:
        _drop_st_index(conn, table)
    build_index(Database(dsn), key, m=16, storage=storage, progress=False, recall_queries=0)
    ef = max(int(vector_m16_ef or 40), 40)
    t = sql.Identifier(*table.split("."))
    with connect(dsn, autocommit=True) as conn:
        ids = [
            r[0]
            for r in conn.execute(
                sql.SQL("select image_id from {} order by image_id limit %s").format(t), (len(queries),)
            )
        ]
    out = {}
    for name, (q, arg) in _overhead_cases(storage, dim, key, t).items():
        args = [{"id": i} for i in ids] if arg == "id" else [{"q": v} for v in queries]
        out[name] = latency_summary(timed_statements(dsn, q, args, ef)[0])
    ratio = out["similar_images"]["p50_ms"] / out["bare_by_id"]["p50_ms"]
    ratio_v = out["similar_to_vector"]["p50_ms"] / out["bare_by_vector"]["p50_ms"]
    log(
        f"  overhead: similar_images {out['similar_images']['p50_ms']} ms vs bare {out['bare_by_id']['p50_ms']} ms"
        f" = {ratio:.2f}x; similar_to_vector {ratio_v:.2f}x"
    )
    return {
        "storage": storage,
        "m": 16,
        "ef_search": ef,
        **{f"{k}_p50_ms": v["p50_ms"] for k, v in out.items()},
        **{f"{k}_p99_ms": v["p99_ms"] for k, v in out.items()},
        "ratio": round(ratio, 3),
        "ratio_vector": round(ratio_v, 3),
        "passed": ratio <= TARGET_OVERHEAD,
    }


def _order_expr(storage: str, dim: int):
    return order_expression(storage, dim, sql.SQL("q.embedding"))
