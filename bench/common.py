"""Shared pieces of the benchmarks: a dedicated embedded server, synthetic data, binary COPY, timing.

Every benchmark runs against its own embedded PostgreSQL in a temporary folder (never the user's),
created with the project's :func:`cbir_pg.db.server.tuned_settings`, migrated to head, so the
tables, indexes and storage options are exactly the ones the product uses.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from psycopg import sql

from cbir_pg.db.database import Database

SYNTH_DATASET = "bench"


# --------------------------------------------------------------------------- machine
def machine_info() -> dict[str, object]:
    """CPU model, cores, RAM, GPU (if any), software versions."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import psutil

        ram = psutil.virtual_memory().total
    except ImportError:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    gpu = None
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        if out.returncode == 0 and out.stdout.strip():
            gpu = "; ".join(s.strip() for s in out.stdout.strip().splitlines())
    except (OSError, subprocess.SubprocessError):
        pass
    info: dict[str, object] = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "affinity_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "ram_gb": round(ram / 2**30, 1),
        "gpu": gpu,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    try:
        import faiss

        info["faiss"] = faiss.__version__
    except ImportError:
        pass
    with suppress(OSError):
        info["load_avg_at_start"] = [round(x, 2) for x in os.getloadavg()]
    return info


# --------------------------------------------------------------------------- timing
@dataclass
class Timer:
    seconds: float = 0.0

    @contextmanager
    def __call__(self) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds += time.perf_counter() - t0


def latency_summary(lat_s: list[float] | np.ndarray) -> dict[str, float]:
    """p50 / p90 / p95 / p99 / mean in milliseconds, and the single-stream QPS they imply."""
    a = np.asarray(lat_s, dtype=np.float64) * 1000.0
    return {
        "p50_ms": round(float(np.percentile(a, 50)), 4),
        "p90_ms": round(float(np.percentile(a, 90)), 4),
        "p95_ms": round(float(np.percentile(a, 95)), 4),
        "p99_ms": round(float(np.percentile(a, 99)), 4),
        "mean_ms": round(float(a.mean()), 4),
        "qps_1client": round(1000.0 / float(a.mean()), 1),
    }


def median(xs: list[float]) -> float:
    return float(statistics.median(xs))


# --------------------------------------------------------------------------- data
def clustered_unit_vectors(
    n: int,
    dim: int,
    *,
    n_clusters: int = 1000,
    noise: float = 1.0,
    n_classes: int | None = None,
    label_noise: float = 0.0,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` unit vectors in ``n_clusters`` Gaussian clusters (labels = cluster id).

    Each point is ``centre + noise * g / sqrt(dim)`` normalised, with ``g`` standard normal: with
    ``noise=1`` a point's cosine to its centre is about 0.7 and to a same-cluster point about 0.5,
    roughly what image-encoder embeddings of one class look like; different clusters are near 0.

    With ``n_classes``, the returned label is the class of the cluster (``cluster % n_classes``), and a
    ``label_noise`` fraction of the points get a random class (annotation noise), so P@N of a perfect
    search is below 1, as on real data.
    """
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_clusters, dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    labels = rng.integers(0, n_clusters, size=n)
    x = rng.standard_normal((n, dim), dtype=np.float32)
    x *= np.float32(noise / np.sqrt(dim))
    x += centres[labels]
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    if n_classes:
        labels = labels % n_classes
        flip = rng.random(n) < label_noise
        labels[flip] = rng.integers(0, n_classes, size=int(flip.sum()))
    return np.ascontiguousarray(x, dtype=np.float32), labels.astype(np.int64)


def exact_topk(index: np.ndarray, queries: np.ndarray, k: int, chunk: int = 2048) -> np.ndarray:
    """Row ids of the exact top-``k`` by inner product (numpy brute force, the recall reference)."""
    out = np.empty((len(queries), k), dtype=np.int64)
    for s in range(0, len(queries), chunk):
        sims = queries[s : s + chunk] @ index.T
        part = np.argpartition(-sims, k, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(sims, part, axis=1), axis=1, kind="stable")
        out[s : s + chunk] = np.take_along_axis(part, order, axis=1)
    return out


def recall_at_k(found: np.ndarray | list[list[int]], truth: np.ndarray, k: int) -> float:
    hits = 0
    for f, t in zip(found, truth, strict=False):
        hits += len(set(list(f)[:k]) & set(t[:k].tolist()))
    return hits / (len(truth) * k)


# --------------------------------------------------------------------------- the server
@dataclass
class BenchServer:
    """A throw-away embedded server with one migrated database ``cbir_bench``."""

    root: Path
    admin_dsn: str = ""
    dsn: str = ""
    settings: dict[str, str] = field(default_factory=dict)

    @classmethod
    @contextmanager
    def started(cls, keep: bool = False) -> Iterator[BenchServer]:
        from cbir_pg.db.migrate import migrate
        from cbir_pg.db.server import EmbeddedServer, tuned_settings

        root = Path(tempfile.mkdtemp(prefix="cbb", dir="/tmp"))  # short: Unix socket path limit
        server = EmbeddedServer(root / "pg")
        try:
            st = server.start()
            bs = cls(root=root, admin_dsn=st.uri("postgres"), settings=tuned_settings())
            with psycopg.connect(bs.admin_dsn, autocommit=True) as conn:
                conn.execute("create database cbir_bench")
            bs.dsn = st.uri("cbir_bench")
            migrate(Database(bs.dsn))
            with psycopg.connect(bs.dsn, autocommit=True) as conn:
                conn.execute("create extension if not exists pg_prewarm")
                bs.settings = {
                    name: conn.execute(sql.SQL("show {}").format(sql.Identifier(name))).fetchone()[0]
                    for name in (
                        "shared_buffers",
                        "work_mem",
                        "maintenance_work_mem",
                        "max_parallel_maintenance_workers",
                        "max_parallel_workers_per_gather",
                        "effective_cache_size",
                    )
                }
            yield bs
        finally:
            if not keep:
                server.stop()
                shutil.rmtree(root, ignore_errors=True)


def ident(table: str) -> sql.Identifier:
    """``schema.name`` as a safe identifier."""
    schema, name = table.split(".")
    return sql.Identifier(schema, name)


def connect(dsn: str, **kw) -> psycopg.Connection:
    from cbir_pg.db.connect import connect as cconnect

    return cconnect(dsn, **kw)


def prewarm(conn: psycopg.Connection, *relations: str) -> dict[str, int]:
    """``pg_prewarm`` each relation (table, then its indexes); returns the blocks loaded."""
    out = {}
    for rel in relations:
        out[rel] = conn.execute("select pg_prewarm(%s::regclass)", (rel,)).fetchone()[0]
    return out


def relation_size_mb(conn: psycopg.Connection, rel: str) -> float:
    return round(conn.execute("select pg_relation_size(%s::regclass)", (rel,)).fetchone()[0] / 2**20, 1)


# --------------------------------------------------------------------------- synthetic catalogue
def seed_images(
    conn: psycopg.Connection, labels: np.ndarray, splits: np.ndarray, dataset: str = SYNTH_DATASET
) -> np.ndarray:
    """Insert one synthetic dataset with ``len(labels)`` images (a harmonised label per cluster, a split
    per row) into ``cbir.image``/``cbir.image_label``; returns the image ids in row order."""
    n_labels = int(labels.max()) + 1
    ds = conn.execute(
        "insert into cbir.dataset (key, kind, name, source) values (%s, 'synthetic', 'benchmark vectors',"
        " 'bench') returning id",
        (dataset,),
    ).fetchone()[0]
    conn.execute(
        "insert into cbir.label (key, modality, region, finding, kind)"
        " select 'XR/bench/c' || lpad(c::text, 4, '0'), 'XR', 'bench', 'c' || lpad(c::text, 4, '0'),"
        " 'pathological' from generate_series(0, %s - 1) c on conflict do nothing",
        (n_labels,),
    )
    by_key = dict(conn.execute("select key, id from cbir.label where region = 'bench'").fetchall())
    label_ids = np.asarray([by_key[f"XR/bench/c{c:04d}"] for c in range(n_labels)])[labels]
    with conn.cursor().copy("copy cbir.image (dataset_id, uri, split, label_id) from stdin") as cp:
        for i, (s, lab) in enumerate(zip(splits.tolist(), label_ids.tolist(), strict=False)):
            cp.write_row((ds, f"synthetic/{i:07d}", s, lab))
    ids = np.asarray(
        [r[0] for r in conn.execute("select id from cbir.image where dataset_id = %s order by id", (ds,))],
        dtype=np.int64,
    )
    assert len(ids) == len(labels)
    conn.execute(
        "insert into cbir.image_label (image_id, label_id) select id, label_id from cbir.image"
        " where dataset_id = %s",
        (ds,),
    )
    conn.commit()
    return ids


def create_vector_table(conn: psycopg.Connection, key: str, dim: int) -> str:
    """The product's embedding table for ``key`` (``cbir.embedding_<key>``, storage plain) and its
    ``cbir.encoder`` row; returns the qualified table name."""
    from cbir_pg.db.identifiers import create_embedding_table, embedding_table_name

    conn.execute(create_embedding_table(key, dim))
    cfg = {"key": key, "family": "synthetic", "dim": dim}
    conn.execute(
        "insert into cbir.encoder (key, family, dim, vector_type, config, config_hash, table_name)"
        " values (%s, 'synthetic', %s, 'vector', %s, %s, %s) on conflict (key) do nothing",
        (key, dim, json.dumps(cfg), f"bench-{key}", embedding_table_name(key)),
    )
    conn.commit()
    return f"cbir.{embedding_table_name(key)}"


def copy_vectors_numpy(
    conn: psycopg.Connection, table: str, ids: np.ndarray, x: np.ndarray, chunk: int = 20000
) -> float:
    """Binary COPY of ``(image_id, embedding)`` from a numpy-packed payload (the product's
    :func:`cbir_pg.ingest.copy.pack_binary_copy`); returns seconds (commit included)."""
    from cbir_pg.ingest.copy import pack_binary_copy

    t0 = time.perf_counter()
    schema, name = table.split(".")
    q = sql.SQL("copy {} (image_id, embedding) from stdin (format binary)").format(
        sql.Identifier(schema, name)
    )
    for s in range(0, len(ids), chunk):
        payload = pack_binary_copy(ids[s : s + chunk], x[s : s + chunk])
        with conn.cursor().copy(q) as cp:
            cp.write(payload)
    conn.commit()
    return time.perf_counter() - t0


def copy_vectors_rows(conn: psycopg.Connection, table: str, ids: np.ndarray, x: np.ndarray) -> float:
    """Binary COPY through psycopg ``write_row`` with pgvector's binary dumper (one Python call a row)."""
    t0 = time.perf_counter()
    schema, name = table.split(".")
    q = sql.SQL("copy {} (image_id, embedding) from stdin (format binary)").format(
        sql.Identifier(schema, name)
    )
    with conn.cursor().copy(q) as cp:
        cp.set_types(["int8", "vector"])
        for i, v in zip(ids.tolist(), x, strict=False):
            cp.write_row((i, v))
    conn.commit()
    return time.perf_counter() - t0


def hnsw_build_sql(
    table: str,
    m: int,
    ef_construction: int,
    opclass: str = "vector_cosine_ops",
    *,
    expr: sql.Composable | None = None,
    suffix: str = "hnsw_idx",
) -> sql.Composed:
    """``create index <name>_<suffix> on <table> using hnsw (<expr> <opclass>) with (m, ef_construction)``;
    ``expr`` is the ``embedding`` column unless given (e.g. a ``halfvec`` cast)."""
    schema, name = table.split(".")
    return sql.SQL(
        "create index {idx} on {tbl} using hnsw ({expr} {ops}) with (m = {m}, ef_construction = {efc})"
    ).format(
        idx=sql.Identifier(f"{name}_{suffix}"),
        tbl=sql.Identifier(schema, name),
        expr=expr or sql.Identifier("embedding"),
        ops=sql.SQL(opclass),
        m=sql.Literal(m),
        efc=sql.Literal(ef_construction),
    )


def load_avg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


# --------------------------------------------------------------------------- timing statements
def _set_ef(conn: psycopg.Connection, ef: int) -> None:
    conn.execute(sql.SQL("set hnsw.ef_search = {}").format(sql.Literal(ef)))


def timed_statements(
    dsn: str,
    q: sql.Composable,
    params: list[Any],
    ef: int,
    *,
    warmup: int = 20,
    prepare: bool = True,
    binary: bool = True,
) -> tuple[list[float], list[list[int]]]:
    """Client-side seconds of each execution of ``q`` (send, execute, fetch) with each of ``params``,
    one connection at ``hnsw.ef_search = ef`` after ``warmup`` untimed runs; and the first column of
    each result."""
    lat: list[float] = []
    found: list[list[int]] = []
    with connect(dsn, autocommit=True) as conn:
        _set_ef(conn, ef)
        for a in params[:warmup]:
            conn.execute(q, a, prepare=prepare, binary=binary).fetchall()
        for a in params:
            t0 = time.perf_counter()
            rows = conn.execute(q, a, prepare=prepare, binary=binary).fetchall()
            lat.append(time.perf_counter() - t0)
            found.append([r[0] for r in rows])
    return lat, found


def concurrent_qps(dsn: str, q: sql.Composable, params: list[Any], ef: int, clients: int) -> float:
    """Statements per second of ``clients`` threads, each with its own warmed connection, splitting
    ``params`` between them; timed from a common start (a barrier) to the last thread's end."""
    conns = []
    for _ in range(clients):
        c = connect(dsn, autocommit=True)
        _set_ef(c, ef)
        for a in params[:10]:
            c.execute(q, a, prepare=True, binary=True).fetchall()
        conns.append(c)

    def runner(c: psycopg.Connection) -> Callable[[int], Any]:
        return lambda i: c.execute(q, params[i], prepare=True, binary=True).fetchall()

    try:
        return barrier_qps([runner(c) for c in conns], len(params))
    finally:
        for c in conns:
            c.close()


def barrier_qps(workers: list[Callable[[int], Any]], n: int) -> float:
    """Items per second of ``len(workers)`` threads splitting items ``0..n-1`` between them, thread
    ``j`` calling ``workers[j](i)`` for each of its items; timed from a common start (a barrier) to the
    last thread's end."""
    import threading

    parts = np.array_split(np.arange(n), len(workers))
    barrier = threading.Barrier(len(workers) + 1)

    def work(one, idx):
        barrier.wait()
        for i in idx:
            one(int(i))

    threads = [threading.Thread(target=work, args=(w, p)) for w, p in zip(workers, parts, strict=True)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    return n / (time.perf_counter() - t0)
