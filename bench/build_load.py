"""Build and load: binary COPY rows/s into a product embedding table, and the HNSW build time of
pgvector against FAISS ``IndexHNSWFlat`` on the same vectors with the same ``m``/``ef_construction``.

The loaded table (with its HNSW index) and the FAISS index are handed on to P2, so one run builds
each vector set once.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import numpy as np
from psycopg import sql

from bench.common import (
    clustered_unit_vectors,
    connect,
    copy_vectors_numpy,
    copy_vectors_rows,
    create_vector_table,
    hnsw_build_sql,
    ident,
    relation_size_mb,
    seed_images,
)


@dataclass
class VectorSet:
    """A loaded, indexed vector set: ``x[i]`` is stored as ``image_id = ids[i]`` in ``table``."""

    key: str
    dim: int
    table: str
    ids: np.ndarray
    x: np.ndarray
    labels: np.ndarray
    queries: np.ndarray
    m: int
    ef_construction: int
    faiss_index: object = None
    build: dict[str, object] = field(default_factory=dict)


def faiss_hnsw(x: np.ndarray, m: int, ef_construction: int, threads: int | None = None):
    """FAISS ``IndexHNSWFlat`` (inner product: cosine on unit vectors); returns (index, seconds)."""
    import faiss

    faiss.omp_set_num_threads(threads or os.cpu_count() or 1)
    index = faiss.IndexHNSWFlat(x.shape[1], m, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = ef_construction
    t0 = time.perf_counter()
    index.add(x)
    return index, time.perf_counter() - t0


def load_and_build(
    dsn: str,
    *,
    n: int,
    dim: int,
    m: int = 16,
    ef_construction: int = 64,
    n_queries: int = 1000,
    n_clusters: int = 1000,
    seed: int = 0,
    rows_path_max: int = 20000,
    log=print,
) -> VectorSet:
    """Seed ``n`` images, COPY their vectors (two ways), build the pgvector HNSW index and the FAISS one."""
    key = f"bench_{dim}_{n}"
    allx, alllabels = clustered_unit_vectors(n + n_queries, dim, n_clusters=n_clusters, seed=seed)
    x, labels, queries = allx[:n], alllabels[:n], allx[n:]
    with connect(dsn) as conn:
        ids = seed_images(conn, labels, np.full(n, "train", dtype=object), dataset=key)
        table = create_vector_table(conn, key, dim)
        # psycopg write_row with pgvector's binary dumper (a Python call per row) on a prefix ...
        n_rows = min(rows_path_max, n // 5)
        t_rows = copy_vectors_rows(conn, table, ids[:n_rows], x[:n_rows])
        # ... and the rest as one numpy-packed binary payload per 20k rows
        t_np = copy_vectors_numpy(conn, table, ids[n_rows:], x[n_rows:])
        conn.autocommit = True
        t0 = time.perf_counter()
        conn.execute(sql.SQL("vacuum analyze {}").format(ident(table)))
        t_vacuum = time.perf_counter() - t0
        log(
            f"  load {key}: write_row {n_rows / t_rows:,.0f} rows/s, numpy-packed {(n - n_rows) / t_np:,.0f} rows/s"
        )
        t0 = time.perf_counter()
        conn.execute(hnsw_build_sql(table, m, ef_construction))
        t_pg = time.perf_counter() - t0
        table_mb = relation_size_mb(conn, table)
        index_mb = relation_size_mb(conn, f"{table}_hnsw_idx")
        workers = conn.execute("show max_parallel_maintenance_workers").fetchone()[0]
    index, t_faiss = faiss_hnsw(x, m, ef_construction)
    log(f"  build {key}: pgvector {t_pg:.1f}s, FAISS {t_faiss:.1f}s ({t_pg / t_faiss:.2f}x)")
    build = {
        "n": n,
        "dim": dim,
        "m": m,
        "ef_construction": ef_construction,
        "copy_write_row_rows": n_rows,
        "copy_write_row_rows_per_s": round(n_rows / t_rows),
        "copy_numpy_rows": n - n_rows,
        "copy_numpy_rows_per_s": round((n - n_rows) / t_np),
        "copy_numpy_mb_per_s": round((n - n_rows) * (dim * 4 + 26) / t_np / 2**20, 1),
        "vacuum_analyze_s": round(t_vacuum, 3),
        "pgvector_build_s": round(t_pg, 3),
        "faiss_build_s": round(t_faiss, 3),
        "build_ratio_pg_over_faiss": round(t_pg / t_faiss, 3),
        "pg_parallel_maintenance_workers": int(workers),
        "faiss_threads": os.cpu_count(),
        "table_mb": table_mb,
        "index_mb": index_mb,
    }
    return VectorSet(key, dim, table, ids, x, labels, queries, m, ef_construction, index, build)
