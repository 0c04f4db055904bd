"""HNSW cosine index per model: build (the way pgvector recommends), status, drop.

One ANN index per model table, named by :func:`cbir_pg.db.identifiers.index_name`:

* ``embedding_<key>_hnsw_idx``: full precision, ``vector_cosine_ops`` (``halfvec_cosine_ops`` on a
  ``halfvec`` column, or on a ``halfvec`` expression for a ``vector`` column above 2,000 dims);
* ``embedding_<key>_hnsw_bq_idx`` (``quantize="binary"``): ``binary_quantize(embedding)::bit(dim)``
  with ``bit_hamming_ops``; :func:`cbir.knn` then over-fetches by Hamming distance and re-ranks by exact
  cosine.

A (re)build never leaves a model without its index: the new index is built under a staging name
(``embedding_<key>_<kind>_new``, ``CREATE INDEX CONCURRENTLY`` when asked), and only once it is complete
does one short transaction drop the old index (and the other kind's) and rename the new one into place.
Searches during the build keep using the old index; a crash during the build (even a SIGKILL of the
postmaster) leaves the old index valid, and the next build drops the half-built staging index first.
Building one kind drops the other once the new one is ready, so the SQL functions never have to choose.
Before building, ``maintenance_work_mem`` is sized to the graph (so it is built in memory, not spilled)
and parallel maintenance workers are allowed; ``ANALYZE`` runs afterwards. The report carries recall@10
of the index path against exact search on a sample of stored vectors.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from cbir_pg.db import identifiers, queries
from cbir_pg.db.connect import connect, translate
from cbir_pg.errors import ConfigError, NotFoundError

QUANTIZE = (None, "binary")
MIN_MAINTENANCE_MB = 64
#: without a known server memory (external server), never ask for more than this
DEFAULT_MAINTENANCE_CAP_MB = 4096


@dataclass(frozen=True)
class BuildProgress:
    """One row of ``pg_stat_progress_create_index``."""

    phase: str
    blocks_done: int = 0
    blocks_total: int = 0
    tuples_done: int = 0
    tuples_total: int = 0
    pid: int | None = None
    index_name: str | None = None

    @property
    def fraction(self) -> float | None:
        if self.tuples_total:
            return self.tuples_done / self.tuples_total
        if self.blocks_total:
            return self.blocks_done / self.blocks_total
        return None


@dataclass
class IndexReport:
    model: str
    index_name: str
    kind: str  # "hnsw" | "hnsw_bq"
    opclass: str
    rows: int
    dim: int
    m: int
    ef_construction: int
    concurrently: bool
    maintenance_work_mem_mb: int
    parallel_workers: int
    build_seconds: float
    size_bytes: int
    dropped: list[str] = field(default_factory=list)
    recall_at_10: float | None = None
    recall_queries: int = 0
    phases: list[str] = field(default_factory=list)


@dataclass
class IndexStatus:
    model: str
    table: str
    dim: int
    rows: int
    index_name: str | None = None
    kind: str | None = None
    valid: bool | None = None
    opclass: str | None = None
    m: int | None = None
    ef_construction: int | None = None
    size_bytes: int | None = None
    definition: str | None = None
    progress: BuildProgress | None = None


@dataclass(frozen=True)
class _Space:
    table_name: str
    dim: int
    column_type: str
    opclass: str
    ann_index: str | None
    binary_index: str | None


def _space(conn: psycopg.Connection, model: str) -> _Space:
    identifiers.check_key(model)
    try:
        row = conn.execute(queries.get("index", "vector_space"), {"model": model}).fetchone()
    except psycopg.errors.NoDataFound as exc:
        raise NotFoundError(str(exc).splitlines()[0]) from None
    return _Space(*row)


def estimate_graph_mb(
    rows: int, dim: int, m: int, *, quantize: str | None = None, halfvec: bool = False
) -> int:
    """Memory the in-memory HNSW graph needs (pgvector builds in ``maintenance_work_mem`` and slows down
    sharply once the graph no longer fits): per element the vector, about ``2m`` layer-0 and ``m``
    upper-layer neighbour candidates (pointer + distance), and the element header; plus 25% headroom."""
    value = (dim + 7) // 8 + 8 if quantize == "binary" else dim * (2 if halfvec else 4) + 8
    per_row = value + 3 * m * 16 + 160
    return int(rows * per_row * 1.25 / (1 << 20)) + 1


def _memory_cap_mb(dsn: str) -> int:
    """A quarter of this machine's memory when the server is local (the embedded one), else a fixed cap."""
    from psycopg.conninfo import conninfo_to_dict

    host = str(conninfo_to_dict(dsn).get("host") or "")
    local = host == "" or host.startswith("/") or host in ("localhost", "127.0.0.1", "::1")
    if not local:
        return DEFAULT_MAINTENANCE_CAP_MB
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return DEFAULT_MAINTENANCE_CAP_MB
    return max(MIN_MAINTENANCE_MB, int(total / 4 / (1 << 20)))


def _setting_mb(conn: psycopg.Connection, name: str) -> int:
    value, unit = conn.execute(
        "select setting::bigint, unit from pg_settings where name = %s", (name,)
    ).fetchone()
    factor = {"kB": 1 / 1024, "8kB": 8 / 1024, "MB": 1, "GB": 1024}.get(unit or "kB", 1 / 1024)
    return int(value * factor)


def _poll_progress(
    dsn: str,
    pid: int,
    stop: threading.Event,
    seen: list[str],
    callback: Callable[[BuildProgress], None] | None,
) -> None:
    try:
        with connect(dsn, autocommit=True, vector=False) as conn:
            q = queries.get("index", "progress")
            while not stop.wait(0.5):
                row = conn.execute(q, {"pid": pid}).fetchone()
                if not row:
                    continue
                p = BuildProgress(row[0], *(int(x or 0) for x in row[1:]), pid=pid)
                if not seen or seen[-1] != p.phase:
                    seen.append(p.phase)
                if callback:
                    callback(p)
    except Exception:  # progress is best effort; the build itself reports its own errors
        return


def build_index(
    dsn: str,
    model: str,
    *,
    m: int = 16,
    ef_construction: int = 64,
    concurrently: bool = False,
    quantize: str | None = None,
    progress: bool | Callable[[BuildProgress], None] = True,
    maintenance_work_mem_mb: int | None = None,
    parallel_workers: int | None = None,
    recall_queries: int = 100,
) -> IndexReport:
    """Build the model's HNSW cosine index (replacing an existing one) and report on it.

    ``progress``: a callable receives :class:`BuildProgress` rows polled from
    ``pg_stat_progress_create_index`` every half second; ``True`` only records the phases seen
    (``report.phases``); ``False`` does not poll. ``recall_queries`` stored vectors (0: none) are searched
    through the new index and exactly, for ``report.recall_at_10``.
    """
    identifiers.check_key(model)
    if quantize not in QUANTIZE:
        raise ConfigError(f"unknown quantisation {quantize!r}: use binary, or leave it out")
    if not 2 <= m <= 100:
        raise ConfigError(f"m must be between 2 and 100 (pgvector's limits), got {m}")
    if not 4 <= ef_construction <= 1000 or ef_construction < 2 * m:
        raise ConfigError(
            f"ef_construction must be between 4 and 1000 and at least 2*m, got {ef_construction}"
        )
    kind = "hnsw_bq" if quantize == "binary" else "hnsw"
    other = "hnsw" if kind == "hnsw_bq" else "hnsw_bq"
    table = identifiers.embedding_table(model)
    index = identifiers.index_identifier(model, kind)

    conn = connect(dsn, autocommit=True)
    try:
        space = _space(conn, model)
        if quantize is None and space.dim > 4000:
            raise ConfigError(
                f"{model} has {space.dim} dims: HNSW indexes at most 4,000 (halfvec); use --quantize binary"
            )
        rows = int(conn.execute(queries.get("index", "row_count", table=table)).fetchone()[0])
        is_half = space.column_type == "halfvec" or space.dim > identifiers.MAX_VECTOR_INDEX_DIM
        column = sql.Identifier("embedding")
        if is_half and space.column_type == "vector":
            column = sql.SQL("({}::halfvec({}))").format(column, sql.Literal(space.dim))
        if quantize == "binary":
            expr = sql.SQL("(binary_quantize({})::bit({}))").format(column, sql.Literal(space.dim))
            opclass = "bit_hamming_ops"
        else:
            expr = column
            opclass = "halfvec_cosine_ops" if is_half else "vector_cosine_ops"

        need = estimate_graph_mb(rows, space.dim, m, quantize=quantize, halfvec=is_half)
        current = _setting_mb(conn, "maintenance_work_mem")
        mwm = maintenance_work_mem_mb or max(current, min(max(need, MIN_MAINTENANCE_MB), _memory_cap_mb(dsn)))
        conn.execute(queries.get("index", "set_maintenance_work_mem"), {"value": f"{int(mwm)}MB"})
        if parallel_workers is None:
            max_workers = int(
                conn.execute("select current_setting('max_worker_processes')::int").fetchone()[0]
            )
            parallel_workers = max(0, min((os.cpu_count() or 2) - 1, 7, max_workers - 1))
        conn.execute(queries.get("index", "set_parallel_workers"), {"value": str(int(parallel_workers))})

        conc = sql.SQL("concurrently") if concurrently else sql.SQL("")
        staging = identifiers.staging_index_name(model, kind)
        staging_id = sql.Identifier(identifiers.SCHEMA, staging)
        create = queries.get(
            "index",
            "create_hnsw",
            concurrently=conc,
            index=sql.Identifier(staging),  # created in the table's schema
            table=table,
            expr=expr,
            opclass=sql.SQL(opclass),
            m=sql.Literal(int(m)),
            ef_construction=sql.Literal(int(ef_construction)),
        )
        # a staging index left by a crashed or failed build (invalid, or never swapped in) goes first;
        # the live index stays until the new one is complete
        conn.execute(queries.get("index", "drop_index", concurrently=conc, index=staging_id))

        seen: list[str] = []
        stop = threading.Event()
        poller = None
        if progress:
            poller = threading.Thread(
                target=_poll_progress,
                args=(dsn, conn.info.backend_pid, stop, seen, progress if callable(progress) else None),
                daemon=True,
            )
            poller.start()
        t0 = time.perf_counter()
        try:
            conn.execute(create)
        finally:
            stop.set()
            if poller:
                poller.join(timeout=5)
        seconds = time.perf_counter() - t0

        # the swap: one transaction drops the old index (and the other kind's) and renames the new one
        no_conc = sql.SQL("")
        dropped = []
        with conn.transaction():
            conn.execute(queries.get("index", "drop_index", concurrently=no_conc, index=index))
            if (space.binary_index if kind == "hnsw" else space.ann_index) is not None:
                conn.execute(
                    queries.get(
                        "index",
                        "drop_index",
                        concurrently=no_conc,
                        index=identifiers.index_identifier(model, other),
                    )
                )
                dropped.append(identifiers.index_name(model, other))
            conn.execute(
                queries.get(
                    "index",
                    "rename_index",
                    index=staging_id,
                    new_name=sql.Identifier(identifiers.index_name(model, kind)),
                )
            )
        conn.execute(queries.get("index", "analyze", table=table))
        size = int(
            conn.execute(
                "select pg_relation_size(to_regclass(%s))", (f"cbir.{identifiers.index_name(model, kind)}",)
            ).fetchone()[0]
        )
    except psycopg.Error as exc:
        raise translate(exc, None) from None
    finally:
        conn.close()

    report = IndexReport(
        model=model,
        index_name=identifiers.index_name(model, kind),
        kind=kind,
        opclass=opclass,
        rows=rows,
        dim=space.dim,
        m=m,
        ef_construction=ef_construction,
        concurrently=concurrently,
        maintenance_work_mem_mb=int(mwm),
        parallel_workers=int(parallel_workers),
        build_seconds=seconds,
        size_bytes=size,
        dropped=dropped,
        phases=seen,
    )
    if recall_queries and rows > 1:
        report.recall_at_10, report.recall_queries = index_recall(
            dsn, model, method="binary" if kind == "hnsw_bq" else "hnsw", queries_n=recall_queries
        )
    return report


def index_recall(
    dsn: str, model: str, *, method: str = "hnsw", k: int = 10, queries_n: int = 100, seed: int = 0
) -> tuple[float, int]:
    """Mean recall@k of ``cbir.knn(method)`` against exact search, over ``queries_n`` stored vectors
    (each query's own image excluded from both). Returns ``(recall, queries used)``."""
    identifiers.check_key(model)
    if method not in ("hnsw", "binary", "auto"):
        raise ConfigError(f"unknown search method {method!r}")
    q = queries.get("index", "recall_sample", table=identifiers.embedding_table(model))
    with connect(dsn) as conn:
        try:
            rows = conn.execute(
                q, {"model": model, "k": k, "n": queries_n, "seed": seed, "method": method}
            ).fetchall()
        except psycopg.Error as exc:
            raise translate(exc) from None
    scored = [len(set(ann) & set(exact)) / len(exact) for _, ann, exact in rows if exact]
    if not scored:
        return float("nan"), 0
    return sum(scored) / len(scored), len(scored)


def _parse_options(options: list[str] | None) -> dict[str, int]:
    out = {}
    for opt in options or []:
        name, _, value = opt.partition("=")
        if value.isdigit():
            out[name] = int(value)
    return out


def index_status(dsn: str, model: str | None = None) -> list[IndexStatus]:
    """Every model's HNSW index(es): kind, validity, size, m / ef_construction, and the progress of a
    build running now (``pg_stat_progress_create_index``). A model without an index has one row with
    ``index_name=None`` (and its progress, when its first build is running)."""
    if model is not None:
        identifiers.check_key(model)
    out: list[IndexStatus] = []
    with connect(dsn, autocommit=True) as conn:
        try:
            encoders = conn.execute(queries.get("index", "encoders"), {"model": model}).fetchall()
            if model is not None and not encoders:
                raise NotFoundError(f"unknown model {model!r}: no row in cbir.encoder")
            for key, dim, table_name in encoders:
                qualified = f"cbir.{table_name}"
                if conn.execute("select to_regclass(%s)", (qualified,)).fetchone()[0] is None:
                    out.append(IndexStatus(key, table_name, dim, 0))
                    continue
                rows = int(
                    conn.execute(
                        queries.get("index", "row_count", table=identifiers.embedding_table(key))
                    ).fetchone()[0]
                )
                prog_rows = conn.execute(
                    queries.get("index", "table_progress"), {"table": qualified}
                ).fetchall()
                progress = {
                    r[6]: BuildProgress(r[1], *(int(x or 0) for x in r[2:6]), pid=r[0], index_name=r[6])
                    for r in prog_rows
                }
                idx_rows = conn.execute(queries.get("index", "hnsw_indexes"), {"table": qualified}).fetchall()
                for name, valid, size, definition, opclass, options in idx_rows:
                    opts = _parse_options(options)
                    out.append(
                        IndexStatus(
                            model=key,
                            table=table_name,
                            dim=dim,
                            rows=rows,
                            index_name=name,
                            kind="hnsw_bq" if opclass == "bit_hamming_ops" else "hnsw",
                            valid=valid,
                            opclass=opclass,
                            m=opts.get("m", 16),
                            ef_construction=opts.get("ef_construction", 64),
                            size_bytes=int(size),
                            definition=definition,
                            progress=progress.pop(name, None),
                        )
                    )
                if not idx_rows:
                    first = next(iter(progress.values()), None)
                    out.append(IndexStatus(key, table_name, dim, rows, progress=first))
        except psycopg.Error as exc:
            raise translate(exc) from None
    return out


def drop_index(dsn: str, model: str, *, concurrently: bool = False) -> list[str]:
    """Drop the model's HNSW indexes (both kinds); returns the names that existed."""
    conc = sql.SQL("concurrently") if concurrently else sql.SQL("")
    dropped = []
    with connect(dsn, autocommit=True) as conn:
        space = _space(conn, model)
        try:
            for kind, existing in (("hnsw", space.ann_index), ("hnsw_bq", space.binary_index)):
                exists = (
                    existing
                    or conn.execute(
                        "select to_regclass(%s)", (f"cbir.{identifiers.index_name(model, kind)}",)
                    ).fetchone()[0]
                )
                if exists:
                    conn.execute(
                        queries.get(
                            "index",
                            "drop_index",
                            concurrently=conc,
                            index=identifiers.index_identifier(model, kind),
                        )
                    )
                    dropped.append(identifiers.index_name(model, kind))
        except psycopg.Error as exc:
            raise translate(exc) from None
    return dropped


# ---------------------------------------------------------------------------- model lifecycle
def drop_embeddings(dsn: str, model: str) -> int:
    """Drop a model's embedding table (and its indexes) and forget its encoder row; returns the number
    of vectors that were stored. Use it when the encoder's config changed and the vectors must be redone."""
    identifiers.check_key(model)
    table = identifiers.embedding_table(model)
    with connect(dsn) as conn:
        try:
            exists = conn.execute(
                "select to_regclass(%s) is not null", (f"cbir.{identifiers.embedding_table_name(model)}",)
            ).fetchone()[0]
            rows = (
                conn.execute(sql.SQL("select count(*) from {}").format(table)).fetchone()[0] if exists else 0
            )
            conn.execute(identifiers.drop_embedding_table(model))
            deleted = conn.execute(queries.get("index", "encoder_delete"), {"key": model}).rowcount
            conn.commit()
        except psycopg.Error as exc:
            raise translate(exc) from None
    if not exists and not deleted:
        raise NotFoundError(f"no embeddings stored for model {model!r}")
    return rows
