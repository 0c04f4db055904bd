"""P3, evaluation throughput: the product's SQL-HNSW evaluation (:func:`cbir_pg.eval.topn.topn`, batched LATERAL
statements over parallel connections) of every query image, against exact FAISS ``IndexFlatIP`` on the
same embeddings, at several index sizes.

Each size is its own synthetic dataset (index split ``train``, queries ``test``, a harmonised label per
cluster), loaded by binary COPY and indexed by :func:`cbir_pg.index.build_index`. P@N (micro average,
N = 1, 3, 5, 10) of both runs; |ΔP@N| is the largest difference over N.

Target: at the largest size the SQL-HNSW evaluation is faster than exact FAISS, with |ΔP@N| <= 0.002.
The FAISS time is the search on vectors already in memory; the time to read them out of PostgreSQL
first (binary COPY) is reported beside it.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from psycopg import sql

from bench.common import (
    clustered_unit_vectors,
    connect,
    copy_vectors_numpy,
    create_vector_table,
    ident,
    latency_summary,
    prewarm,
    seed_images,
)
from cbir_pg.db.database import Database

NS = (1, 3, 5, 10)
TARGET_DELTA = 0.002


def _precision(relevant: np.ndarray, ns=NS) -> dict[int, float]:
    return {n: float(relevant[:, :n].mean()) for n in ns}


def _fetch_vectors(dsn: str, table: str, dim: int) -> tuple[np.ndarray, float]:
    """Read every vector out of PostgreSQL with binary COPY (what an exact evaluation outside the
    database must do first); returns (array, seconds)."""
    t0 = time.perf_counter()
    chunks = []
    with (
        connect(dsn) as conn,
        conn.cursor().copy(
            sql.SQL("copy (select embedding from {} order by image_id) to stdout (format binary)").format(
                ident(table)
            )
        ) as cp,
    ):
        for block in cp:
            chunks.append(bytes(block))
    raw = b"".join(chunks)
    body = np.frombuffer(raw, dtype=np.uint8, offset=19, count=len(raw) - 19 - 2)
    rowlen = 2 + 4 + 4 + 4 * dim
    rows = body.reshape(-1, rowlen)
    x = rows[:, 10:].copy().view(">f4").astype(np.float32)
    return x, time.perf_counter() - t0


@dataclass(frozen=True)
class Clusters:
    """The clustered vectors' generator (:func:`bench.common.clustered_unit_vectors`) besides the seed,
    as each size's result records it."""

    n_clusters: int = 1000
    noise: float = 1.0
    n_classes: int = 20
    label_noise: float = 0.2


@dataclass(frozen=True)
class P3Setup:
    """What every size of a P3 (or ``--scale``) series shares: the query count and dimension, the
    vectors' generator, the HNSW build and the evaluation's parallelism. The defaults are the setup
    docs/benchmarks.md reports."""

    n_queries: int
    dim: int
    clusters: Clusters = Clusters()
    m: int = 16
    ef_construction: int = 64
    connections: int = 2
    batch_size: int = 256


@dataclass
class _Loaded:
    """One size's vectors in PostgreSQL with the product's index, and what loading them measured."""

    key: str
    table: str
    ids: np.ndarray
    labels: np.ndarray
    copy_s: float
    report: Any  # cbir_pg.index.IndexReport
    blocks: int


def _load(dsn: str, setup: P3Setup, size: int, key: str) -> _Loaded:
    """Clustered vectors (``size`` train + ``setup.n_queries`` test) COPYed in, HNSW built by the
    product's ``build_index``, table and index prewarmed."""
    from cbir_pg.index import build_index

    x, labels = clustered_unit_vectors(size + setup.n_queries, setup.dim, seed=size, **asdict(setup.clusters))
    splits = np.array(["train"] * size + ["test"] * setup.n_queries, dtype=object)
    with connect(dsn) as conn:
        ids = seed_images(conn, labels, splits, dataset=key)
        table = create_vector_table(conn, key, setup.dim)
        t_copy = copy_vectors_numpy(conn, table, ids, x)
        conn.autocommit = True
        conn.execute(sql.SQL("vacuum analyze {}").format(ident(table)))
    report = build_index(
        Database(dsn), key, m=setup.m, ef_construction=setup.ef_construction, progress=False, recall_queries=0
    )
    with connect(dsn, autocommit=True) as conn:
        blocks = prewarm(conn, table, f"{table}_hnsw_idx", "cbir.image")
    return _Loaded(key, table, ids, labels, t_copy, report, blocks)


@dataclass
class _Exact:
    """Exact FAISS ``IndexFlatIP`` top-N on the vectors read back from PostgreSQL (bit-identical)."""

    seconds: float
    fetch_s: float
    neighbours: np.ndarray  # (queries, N) positions in the index
    p_at_n: dict[int, float]
    queries: np.ndarray  # the query vectors


def _exact(dsn: str, ld: _Loaded, size: int, dim: int) -> _Exact:
    import faiss

    xs, t_fetch = _fetch_vectors(dsn, ld.table, dim)
    xi, xq = xs[:size], xs[size:]
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    t0 = time.perf_counter()
    flat = faiss.IndexFlatIP(dim)
    flat.add(xi)
    _, nn = flat.search(xq, max(NS))
    t_exact = time.perf_counter() - t0
    rel = ld.labels[:size][nn] == ld.labels[size:, None]
    return _Exact(t_exact, t_fetch, nn, _precision(rel), xq)


def _ann_run(
    dsn: str, ld: _Loaded, ex: _Exact, size: int, ef: int, batch_size: int, connections: int
) -> dict[str, Any]:
    """SQL-HNSW evaluation (``eval.topn.topn(mode="ann")``) of every query at one ``ef_search``, against
    the exact reference: |dP@N|, recall@10, queries/s and the speed-up."""
    from cbir_pg.eval.topn import IndexFilter, topn

    qids = ld.ids[size:]
    n_queries, nmax = len(qids), max(NS)
    t0 = time.perf_counter()
    res = topn(
        Database(dsn),
        ld.key,
        query_ids=qids.tolist(),
        index_filter=IndexFilter(splits=("train",), datasets=(ld.key,)),
        n=nmax,
        mode="ann",
        ef_search=ef,
        batch_size=batch_size,
        connections=connections,
        progress=False,
    )
    wall = time.perf_counter() - t0
    p_ann = _precision(res.relevant)
    exact_ids = ld.ids[:size][ex.neighbours]
    rec = float(
        np.mean([len(set(a) & set(b)) / nmax for a, b in zip(res.neighbour_ids, exact_ids, strict=False)])
    )
    return {
        "ef_search": res.ef_search,
        "abs_delta_p": {str(n): round(abs(p_ann[n] - ex.p_at_n[n]), 5) for n in NS},
        "sql_query_s": round(res.seconds, 3),
        "sql_wall_s": round(wall, 3),
        "sql_qps": round(n_queries / wall, 1),
        "plan_uses_index": res.plan_uses_index,
        "exact_fallbacks": res.exact_fallbacks,
        "p_at_n": {str(n): round(p_ann[n], 5) for n in NS},
        "max_abs_delta_p": round(max(abs(p_ann[n] - ex.p_at_n[n]) for n in NS), 5),
        "recall@10": round(rec, 4),
        "speedup_vs_exact": round(ex.seconds / wall, 3),
    }


def run_size(
    dsn: str,
    setup: P3Setup,
    *,
    size: int,
    ef_values: list[int],
    key_prefix: str = "p3",
    latency_queries: int = 0,
    drop_after: bool = False,
    log=print,
) -> dict[str, object]:
    """One index size: load and index (:func:`_load`), the exact reference (:func:`_exact`), one SQL-HNSW
    evaluation per ``ef_search`` (:func:`_ann_run`). ``latency_queries`` > 0 also times that many single
    top-10 statements (one client, prepared, binary) at each ``ef_search`` (the scale part);
    ``drop_after`` drops the embedding table at the end (keeps a series of large sizes within memory
    and disk)."""
    ld = _load(dsn, setup, size, f"{key_prefix}_{size}")
    report = ld.report
    log(f"  P3 {size}: COPY {len(ld.ids) / ld.copy_s:,.0f} rows/s, HNSW build {report.build_seconds:.1f}s")
    ex = _exact(dsn, ld, size, setup.dim)
    log(
        f"  P3 {size}: exact FAISS {ex.seconds:.2f}s ({setup.n_queries / ex.seconds:,.0f} q/s), fetch from PG {ex.fetch_s:.2f}s"
    )
    runs = []
    for ef in ef_values:
        row = _ann_run(dsn, ld, ex, size, ef, setup.batch_size, setup.connections)
        log(
            f"  P3 {size} ef={row['ef_search']}: SQL-HNSW {row['sql_wall_s']:.2f}s ({row['sql_qps']:,.0f} q/s)"
            f" vs exact {ex.seconds:.2f}s -> {row['speedup_vs_exact']}x, |dP@N| {row['max_abs_delta_p']:.4f},"
            f" recall {row['recall@10']:.4f}"
        )
        runs.append(row)
    if latency_queries:
        _latency(dsn, ld.table, setup.dim, report.opclass, ex.queries[:latency_queries], runs, log=log)
    if drop_after:
        with connect(dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("drop table {}").format(ident(ld.table)))
    return _size_result(ld, ex, runs, setup, size)


def _size_result(
    ld: _Loaded, ex: _Exact, runs: list[dict[str, Any]], setup: P3Setup, size: int
) -> dict[str, object]:
    """One size's record: what was loaded and built, the exact reference, each ef_search's run, and the
    best run within |dP@N| <= TARGET_DELTA (the target)."""
    report = ld.report
    ok = [r for r in runs if r["max_abs_delta_p"] <= TARGET_DELTA]
    best = max(ok, key=lambda r: r["speedup_vs_exact"]) if ok else None
    return {
        "size": size,
        "n_queries": setup.n_queries,
        "dim": setup.dim,
        **asdict(setup.clusters),
        "connections": setup.connections,
        "batch_size": setup.batch_size,
        "copy_rows_per_s": round(len(ld.ids) / ld.copy_s),
        "hnsw_build_s": round(report.build_seconds, 3),
        "graph_vectors": report.rows,
        "index_opclass": report.opclass,
        "hnsw_m": setup.m,
        "hnsw_ef_construction": setup.ef_construction,
        "index_bytes": report.size_bytes,
        "index_mb": round(report.size_bytes / 2**20, 1),
        "build_maintenance_work_mem_mb": report.maintenance_work_mem_mb,
        "build_parallel_workers": report.parallel_workers,
        "prewarmed_blocks": ld.blocks,
        "exact_faiss_s": round(ex.seconds, 3),
        "exact_faiss_qps": round(setup.n_queries / ex.seconds, 1),
        "exact_fetch_from_pg_s": round(ex.fetch_s, 3),
        "p_at_n_exact": {str(n): round(ex.p_at_n[n], 5) for n in NS},
        "runs": runs,
        "best_ef_within_delta": best["ef_search"] if best else None,
        "speedup_vs_exact": best["speedup_vs_exact"] if best else None,
        "passed": bool(best and best["speedup_vs_exact"] > 1.0),
    }


def _latency(dsn, table, dim, opclass, queries, runs, log=print) -> None:
    """p50/p95 of a single top-10 statement (the product's index expression) at each run's ef_search;
    adds ``latency_p50_ms`` / ``latency_p95_ms`` to each run."""
    from bench.storage import _single, topk_sql

    storage = "halfvec" if opclass.startswith("halfvec") else "vector"
    q = topk_sql(storage, table, dim)
    for row in runs:
        lat, _ = _single(dsn, q, queries, row["ef_search"])
        s = latency_summary(lat)
        row["latency_p50_ms"], row["latency_p95_ms"] = s["p50_ms"], s["p95_ms"]
        log(f"    top-10 latency ef={row['ef_search']}: p50 {s['p50_ms']:.3f} ms, p95 {s['p95_ms']:.3f} ms")


def run_p3(
    dsn: str,
    *,
    sizes: list[int],
    n_queries: int,
    dim: int,
    ef_values: list[int],
    connections: int = 2,
    log=print,
) -> dict[str, object]:
    setup = P3Setup(n_queries, dim, connections=connections)
    per_size = [run_size(dsn, setup, size=s, ef_values=ef_values, log=log) for s in sizes]
    last = per_size[-1]
    return {
        "sizes": sizes,
        "n_queries": n_queries,
        "dim": dim,
        "per_size": per_size,
        "target": f"SQL-HNSW faster than exact FAISS at {sizes[-1]:,} with |dP@N| <= {TARGET_DELTA}",
        "ratio": last["speedup_vs_exact"],
        "passed": last["passed"],
    }
