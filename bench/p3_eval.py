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

import numpy as np
from psycopg import sql

from bench.common import (
    clustered_unit_vectors,
    connect,
    copy_vectors_numpy,
    create_vector_table,
    ident,
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


def run_size(
    dsn: str,
    *,
    size: int,
    n_queries: int,
    dim: int,
    ef_values: list[int],
    n_clusters: int = 1000,
    noise: float = 1.0,
    n_classes: int = 20,
    label_noise: float = 0.2,
    connections: int = 2,
    batch_size: int = 256,
    m: int = 16,
    ef_construction: int = 64,
    log=print,
) -> dict[str, object]:
    import faiss

    from cbir_pg.eval.topn import IndexFilter, topn
    from cbir_pg.index import build_index

    key = f"p3_{size}"
    x, labels = clustered_unit_vectors(
        size + n_queries,
        dim,
        n_clusters=n_clusters,
        noise=noise,
        n_classes=n_classes,
        label_noise=label_noise,
        seed=size,
    )
    splits = np.array(["train"] * size + ["test"] * n_queries, dtype=object)
    with connect(dsn) as conn:
        ids = seed_images(conn, labels, splits, dataset=key)
        table = create_vector_table(conn, key, dim)
        t_copy = copy_vectors_numpy(conn, table, ids, x)
        conn.autocommit = True
        conn.execute(sql.SQL("vacuum analyze {}").format(ident(table)))
    report = build_index(
        Database(dsn), key, m=m, ef_construction=ef_construction, progress=False, recall_queries=0
    )
    with connect(dsn, autocommit=True) as conn:
        blocks = prewarm(conn, table, f"{table}_hnsw_idx", "cbir.image")
    log(f"  P3 {size}: COPY {len(ids) / t_copy:,.0f} rows/s, HNSW build {report.build_seconds:.1f}s")

    qids = ids[size:]
    nmax = max(NS)
    # exact FAISS on the same vectors (read back from the database, so bit-identical)
    xs, t_fetch = _fetch_vectors(dsn, table, dim)
    xi, xq = xs[:size], xs[size:]
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    t0 = time.perf_counter()
    flat = faiss.IndexFlatIP(dim)
    flat.add(xi)
    _, nn = flat.search(xq, nmax)
    t_exact = time.perf_counter() - t0
    rel_exact = labels[:size][nn] == labels[size:, None]
    p_exact = _precision(rel_exact)
    log(
        f"  P3 {size}: exact FAISS {t_exact:.2f}s ({n_queries / t_exact:,.0f} q/s), fetch from PG {t_fetch:.2f}s"
    )

    flt = IndexFilter(splits=("train",), datasets=(key,))
    runs = []
    for ef in ef_values:
        t0 = time.perf_counter()
        res = topn(
            Database(dsn),
            key,
            query_ids=qids.tolist(),
            index_filter=flt,
            n=nmax,
            mode="ann",
            ef_search=ef,
            batch_size=batch_size,
            connections=connections,
            progress=False,
        )
        wall = time.perf_counter() - t0
        p_ann = _precision(res.relevant)
        delta = max(abs(p_ann[n] - p_exact[n]) for n in NS)
        # recall of the top-10 against exact (ids)
        exact_ids = ids[:size][nn]
        rec = float(
            np.mean([len(set(a) & set(b)) / nmax for a, b in zip(res.neighbour_ids, exact_ids, strict=False)])
        )
        row = {
            "ef_search": res.ef_search,
            "sql_query_s": round(res.seconds, 3),
            "sql_wall_s": round(wall, 3),
            "sql_qps": round(n_queries / wall, 1),
            "plan_uses_index": res.plan_uses_index,
            "exact_fallbacks": res.exact_fallbacks,
            "p_at_n": {str(n): round(p_ann[n], 5) for n in NS},
            "max_abs_delta_p": round(delta, 5),
            "recall@10": round(rec, 4),
            "speedup_vs_exact": round(t_exact / wall, 3),
        }
        log(
            f"  P3 {size} ef={res.ef_search}: SQL-HNSW {wall:.2f}s ({row['sql_qps']:,.0f} q/s)"
            f" vs exact {t_exact:.2f}s -> {row['speedup_vs_exact']}x, |dP@N| {delta:.4f}, recall {rec:.4f}"
        )
        runs.append(row)
    ok = [r for r in runs if r["max_abs_delta_p"] <= TARGET_DELTA]
    best = max(ok, key=lambda r: r["speedup_vs_exact"]) if ok else None
    return {
        "size": size,
        "n_queries": n_queries,
        "dim": dim,
        "n_clusters": n_clusters,
        "n_classes": n_classes,
        "label_noise": label_noise,
        "connections": connections,
        "batch_size": batch_size,
        "copy_rows_per_s": round(len(ids) / t_copy),
        "hnsw_build_s": round(report.build_seconds, 3),
        "prewarmed_blocks": blocks,
        "exact_faiss_s": round(t_exact, 3),
        "exact_faiss_qps": round(n_queries / t_exact, 1),
        "exact_fetch_from_pg_s": round(t_fetch, 3),
        "p_at_n_exact": {str(n): round(p_exact[n], 5) for n in NS},
        "runs": runs,
        "best_ef_within_delta": best["ef_search"] if best else None,
        "speedup_vs_exact": best["speedup_vs_exact"] if best else None,
        "passed": bool(best and best["speedup_vs_exact"] > 1.0),
    }


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
    per_size = [
        run_size(
            dsn, size=s, n_queries=n_queries, dim=dim, ef_values=ef_values, connections=connections, log=log
        )
        for s in sizes
    ]
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
