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
postmaster) leaves the old index valid. A build holds the model's build lock, so two builds of one model
never race on the staging name, and a staging index whose lock is free is a crashed build's: it is
dropped by the next ``db migrate``, ``ingest``, ``index status`` or build (:func:`drop_stale_staging`).
Building one kind drops the other once the new one is ready, so the SQL functions never have to choose.
Before building, ``maintenance_work_mem`` is sized to the graph (so it is built in memory, not spilled)
and parallel maintenance workers are allowed; ``ANALYZE`` runs afterwards. The report carries recall@10
of the index path against exact search on a sample of stored vectors.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import psycopg
from psycopg import sql
from psycopg.rows import class_row

from cbir_pg.db import identifiers, queries
from cbir_pg.db.database import Database, db_errors, dict_cursor, scalar
from cbir_pg.errors import CbirError, ConfigError, NotFoundError
from cbir_pg.rules import MAX_HALFVEC_INDEX_DIM

QUANTIZE = (None, "binary")
#: storage of the full-precision index on a ``vector`` column (<= 2,000 dims). ``halfvec`` (the default)
#: indexes ``embedding::halfvec(d)``: half the bytes per graph element; measured (docs/benchmarks.md,
#: 100,000 x 768 on 14 cores) 1.05 ms p50 at recall@10 >= 0.98 against 1.52 ms for ``vector`` with m=16
#: (0.98 vs 1.33 ms with m=32), at the same build time. ``vector`` is round 1's choice.
STORAGES = ("halfvec", "vector")
DEFAULT_STORAGE = "halfvec"
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

    @property
    def storage(self) -> str | None:
        """What the graph stores: ``vector``, ``halfvec`` or ``bit`` (binary-quantised)."""
        return {"vector_cosine_ops": "vector", "halfvec_cosine_ops": "halfvec", "bit_hamming_ops": "bit"}.get(
            self.opclass or ""
        )


def _progress(row: dict, **extra) -> BuildProgress:
    """A ``pg_stat_progress_create_index`` row (by name) as :class:`BuildProgress`."""
    counts = ("blocks_done", "blocks_total", "tuples_done", "tuples_total")
    return BuildProgress(row["phase"], **{c: int(row[c] or 0) for c in counts}, **extra)


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
        with conn.cursor(row_factory=class_row(_Space)) as cur:
            return cur.execute(queries.get("index", "vector_space"), {"model": model}).fetchone()
    except psycopg.errors.NoDataFound as exc:
        raise NotFoundError(str(exc).splitlines()[0]) from None


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
    row = (
        dict_cursor(conn)
        .execute("select setting::bigint as value, unit from pg_settings where name = %s", (name,))
        .fetchone()
    )
    value, unit = row["value"], row["unit"]
    factor = {"kB": 1 / 1024, "8kB": 8 / 1024, "MB": 1, "GB": 1024}.get(unit or "kB", 1 / 1024)
    return int(value * factor)


def _poll_progress(
    db: Database,
    pid: int,
    stop: threading.Event,
    seen: list[str],
    callback: Callable[[BuildProgress], None] | None,
) -> None:
    try:
        with db.connect(autocommit=True, vector=False) as conn:
            q = queries.get("index", "progress")
            while not stop.wait(0.5):
                row = conn.execute(q, {"pid": pid}).fetchone()
                if not row:
                    continue
                p = _progress(row, pid=pid)
                if not seen or seen[-1] != p.phase:
                    seen.append(p.phase)
                if callback:
                    callback(p)
    except Exception:  # progress is best effort; the build itself reports its own errors
        return


def build_index(
    db: Database,
    model: str,
    *,
    m: int = 16,
    ef_construction: int = 64,
    concurrently: bool = False,
    quantize: str | None = None,
    storage: str = DEFAULT_STORAGE,
    progress: bool | Callable[[BuildProgress], None] = True,
    maintenance_work_mem_mb: int | None = None,
    parallel_workers: int | None = None,
    recall_queries: int = 100,
) -> IndexReport:
    """Build the model's HNSW cosine index (replacing an existing one) and report on it.

    ``storage``: ``halfvec`` (default, measured fastest at equal recall) indexes a ``vector`` column as
    ``embedding::halfvec(d)``; ``vector`` indexes the column itself (round 1's choice). The SQL functions
    and the evaluation search whichever expression the index covers (``cbir.model_vector_space``).

    ``progress``: a callable receives :class:`BuildProgress` rows polled from
    ``pg_stat_progress_create_index`` every half second; ``True`` only records the phases seen
    (``report.phases``); ``False`` does not poll. ``recall_queries`` stored vectors (0: none) are searched
    through the new index and exactly, for ``report.recall_at_10``.
    """
    _check_build_args(model, quantize, m, ef_construction)
    if isinstance(recall_queries, bool) or not isinstance(recall_queries, int) or recall_queries < 0:
        raise ConfigError(f"--recall-queries must be 0 (skip) or a positive number, got {recall_queries!r}")
    if storage not in STORAGES:
        raise ConfigError(f"unknown storage {storage!r}: use {' or '.join(STORAGES)}")
    conn = db.connect(autocommit=True)
    with db_errors(), conn:
        space = _space(conn, model)
        rows = int(scalar(conn, queries.get("index", "row_count", table=identifiers.embedding_table(model))))
        plan = plan_index(
            model,
            space,
            rows,
            _server_facts(conn, db.dsn),
            m=m,
            ef_construction=ef_construction,
            quantize=quantize,
            storage=storage,
            concurrently=concurrently,
            maintenance_work_mem_mb=maintenance_work_mem_mb,
            parallel_workers=parallel_workers,
        )
        report = _locked_build(db, conn, plan, progress, rows=rows, dim=space.dim)
    if recall_queries and rows > 1:
        report.recall_at_10, report.recall_queries = index_recall(
            db, model, method="binary" if plan.kind == "hnsw_bq" else "hnsw", queries_n=recall_queries
        )
    return report


def _server_facts(conn: psycopg.Connection, dsn: str) -> _ServerFacts:
    return _ServerFacts(
        maintenance_work_mem_mb=_setting_mb(conn, "maintenance_work_mem"),
        memory_cap_mb=_memory_cap_mb(dsn),
        max_worker_processes=int(scalar(conn, "select current_setting('max_worker_processes')::int")),
        cpu_count=os.cpu_count() or 2,
    )


def _locked_build(db: Database, conn: psycopg.Connection, plan: IndexPlan, progress, *, rows: int, dim: int):
    """Run ``plan`` holding the model's build lock: one build per model at a time (two would race on the
    staging index's name); held for the whole build, so a staging index whose lock is free is a crashed
    build's (drop_stale_staging)."""
    from cbir_pg.db.locks import key_of, wait_for_lock

    model = plan.model
    lock = key_of(conn, "text_key", build_lock_name(model))
    wait_for_lock(conn, lock, f"index build --model {model} (another build of this model is running)")
    try:
        seconds, size, dropped, phases = _execute_plan(db, conn, plan, progress)
    finally:
        conn.execute(queries.get("locks", "unlock"), {"key": lock})
    planned = ("model", "index_name", "kind", "opclass", "m", "ef_construction", "concurrently")
    planned += ("maintenance_work_mem_mb", "parallel_workers")
    return IndexReport(
        **{f: getattr(plan, f) for f in planned},
        rows=rows,
        dim=dim,
        build_seconds=seconds,
        size_bytes=size,
        dropped=dropped,
        phases=phases,
    )


def build_lock_name(model: str) -> str:
    """The text of the advisory lock a build of ``model`` holds (:func:`cbir_pg.db.locks.key_of`)."""
    return f"cbir-pg index build {model}"


KINDS = ("hnsw", "hnsw_bq")


def drop_stale_staging(db: Database, model: str | None = None) -> list[str]:
    """Drop the staging indexes (``embedding_<key>_<kind>_new``) that no running build owns: a build
    that crashed after creating its index but before swapping it in leaves a complete index that every
    insert would keep maintaining. A staging index is a running build's only while that build holds the
    model's build lock, so one whose lock is free is dropped. Run by ``db migrate``, ``ingest`` and
    ``index status``; returns the names dropped."""
    from cbir_pg.db.locks import key_of

    if model is not None:
        identifiers.check_key(model)
    dropped: list[str] = []
    with db_errors(), db.connect(autocommit=True) as conn:
        if scalar(conn, "select to_regclass('cbir.encoder') is null"):
            return dropped
        for enc in conn.execute(queries.get("index", "encoders"), {"model": model}).fetchall():
            key = enc["key"]
            stale = [
                k
                for k in KINDS
                if scalar(conn, "select to_regclass(%s)", (f"cbir.{identifiers.staging_index_name(key, k)}",))
            ]
            if not stale:
                continue
            lock = key_of(conn, "text_key", build_lock_name(key))
            if not scalar(conn, queries.get("locks", "try_lock"), {"key": lock}):
                continue  # a build is running: its staging index is not stale
            try:
                for k in stale:
                    name = identifiers.staging_index_name(key, k)
                    conn.execute(
                        queries.get(
                            "index",
                            "drop_index",
                            concurrently=sql.SQL(""),
                            index=sql.Identifier(identifiers.SCHEMA, name),
                        )
                    )
                    dropped.append(name)
            finally:
                conn.execute(queries.get("locks", "unlock"), {"key": lock})
    return dropped


def _check_build_args(model: str, quantize: str | None, m: int, ef_construction: int) -> None:
    identifiers.check_key(model)
    if quantize not in QUANTIZE:
        raise ConfigError(f"unknown quantisation {quantize!r}: use binary, or leave it out")
    if not 2 <= m <= 100:
        raise ConfigError(f"m must be between 2 and 100 (pgvector's limits), got {m}")
    if not 4 <= ef_construction <= 1000 or ef_construction < 2 * m:
        raise ConfigError(
            f"ef_construction must be between 4 and 1000 and at least 2*m, got {ef_construction}"
        )


@dataclass(frozen=True)
class _ServerFacts:
    """What the plan needs to know about the server and this machine."""

    maintenance_work_mem_mb: int
    memory_cap_mb: int
    max_worker_processes: int
    cpu_count: int


@dataclass(frozen=True)
class IndexPlan:
    """Everything a build will do, decided before it starts (:func:`plan_index`, no database)."""

    model: str
    kind: str  # "hnsw" | "hnsw_bq"
    index_name: str
    expr: sql.Composable  # the indexed expression
    opclass: str
    m: int
    ef_construction: int
    concurrently: bool
    maintenance_work_mem_mb: int
    parallel_workers: int
    drop_other: str | None  # the other kind's index, dropped once the new one is ready


def plan_index(
    model: str,
    space: _Space,
    rows: int,
    server: _ServerFacts,
    *,
    m: int,
    ef_construction: int,
    quantize: str | None,
    concurrently: bool,
    maintenance_work_mem_mb: int | None,
    parallel_workers: int | None,
    storage: str = DEFAULT_STORAGE,
) -> IndexPlan:
    """The build plan: index kind and expression, operator class (from ``cbir.model_vector_space``),
    ``maintenance_work_mem`` sized to the graph, parallel workers."""
    if quantize is None and space.dim > MAX_HALFVEC_INDEX_DIM:
        raise ConfigError(
            f"{model} has {space.dim} dims: HNSW indexes at most 4,000 (halfvec); use --quantize binary"
        )
    kind = "hnsw_bq" if quantize == "binary" else "hnsw"
    is_half = (
        space.column_type == "halfvec"
        or space.dim > identifiers.MAX_VECTOR_INDEX_DIM
        or (storage == "halfvec" and quantize is None)
    )
    column: sql.Composable = sql.Identifier("embedding")
    if is_half and space.column_type == "vector":
        column = sql.SQL("({}::halfvec({}))").format(column, sql.Literal(space.dim))
    if quantize == "binary":
        expr: sql.Composable = sql.SQL("(binary_quantize({})::bit({}))").format(
            column, sql.Literal(space.dim)
        )
        opclass = "bit_hamming_ops"
    else:
        expr, opclass = column, ("halfvec_cosine_ops" if is_half else space.opclass)
    need = estimate_graph_mb(rows, space.dim, m, quantize=quantize, halfvec=is_half)
    mwm = maintenance_work_mem_mb or max(
        server.maintenance_work_mem_mb, min(max(need, MIN_MAINTENANCE_MB), server.memory_cap_mb)
    )
    if parallel_workers is None:
        parallel_workers = max(0, min(server.cpu_count - 1, 7, server.max_worker_processes - 1))
    other = "hnsw" if kind == "hnsw_bq" else "hnsw_bq"
    other_exists = (space.binary_index if kind == "hnsw" else space.ann_index) is not None
    return IndexPlan(
        model=model,
        kind=kind,
        index_name=identifiers.index_name(model, kind),
        expr=expr,
        opclass=opclass,
        m=int(m),
        ef_construction=int(ef_construction),
        concurrently=concurrently,
        maintenance_work_mem_mb=int(mwm),
        parallel_workers=int(parallel_workers),
        drop_other=identifiers.index_name(model, other) if other_exists else None,
    )


def _execute_plan(
    db: Database, conn: psycopg.Connection, plan: IndexPlan, progress: bool | Callable[[BuildProgress], None]
) -> tuple[float, int, list[str], list[str]]:
    """Run a plan on ``conn`` (autocommit): settings, create under the staging name (progress polled on
    a second connection), swap it in (dropping the old index and the other kind), ANALYZE. Returns ``(seconds, size_bytes, dropped, phases)``."""
    table = identifiers.embedding_table(plan.model)
    conn.execute(
        queries.get("index", "set_maintenance_work_mem"), {"value": f"{plan.maintenance_work_mem_mb}MB"}
    )
    conn.execute(queries.get("index", "set_parallel_workers"), {"value": str(plan.parallel_workers)})
    conc = sql.SQL("concurrently") if plan.concurrently else sql.SQL("")
    staging = identifiers.staging_index_name(plan.model, plan.kind)
    staging_id = sql.Identifier(identifiers.SCHEMA, staging)
    create = queries.get(
        "index",
        "create_hnsw",
        concurrently=conc,
        index=sql.Identifier(staging),  # created in the table's schema
        table=table,
        expr=plan.expr,
        opclass=sql.SQL(plan.opclass),
        m=sql.Literal(plan.m),
        ef_construction=sql.Literal(plan.ef_construction),
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
            args=(db, conn.info.backend_pid, stop, seen, progress if callable(progress) else None),
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
    _swap_in(conn, plan, staging_id)
    dropped = [plan.drop_other] if plan.drop_other is not None else []
    conn.execute(queries.get("index", "analyze", table=table))
    # and the images: with fresh statistics the search's "is any image excluded?" reads the partial index
    # cbir.image_excluded (empty in the usual case), not every image (20_search.sql)
    conn.execute(queries.get("index", "analyze", table=sql.Identifier("cbir", "image")))
    size = int(scalar(conn, "select pg_relation_size(to_regclass(%s))", (f"cbir.{plan.index_name}",)))
    return seconds, size, dropped, seen


def _swap_in(conn: psycopg.Connection, plan: IndexPlan, staging_id: sql.Identifier) -> None:
    """The swap: one transaction drops the old index (and the other kind's) and renames the new one
    into place, so searches never see a model without its index."""

    def drop(index: sql.Identifier) -> None:
        conn.execute(queries.get("index", "drop_index", concurrently=sql.SQL(""), index=index))

    with conn.transaction():
        drop(identifiers.index_identifier(plan.model, plan.kind))
        if plan.drop_other is not None:
            drop(sql.Identifier(identifiers.SCHEMA, plan.drop_other))
        conn.execute(
            queries.get("index", "rename_index", index=staging_id, new_name=sql.Identifier(plan.index_name))
        )
        # the model's generated search function is written for its indexes: rewrite it in the same
        # transaction, so a search sees the new index and the function that uses it together
        conn.execute(queries.get("index", "refresh_search_functions"), {"model": plan.model})


def index_recall(
    db: Database, model: str, *, method: str = "hnsw", k: int = 10, queries_n: int = 100, seed: int = 0
) -> tuple[float, int]:
    """Mean recall@k of ``cbir.knn(method)`` against exact search, over ``queries_n`` stored vectors
    (each query's own image excluded from both). Returns ``(recall, queries used)``."""
    identifiers.check_key(model)
    if method not in ("hnsw", "binary", "auto"):
        raise ConfigError(f"unknown search method {method!r}")
    q = queries.get("index", "recall_sample", table=identifiers.embedding_table(model))
    with db.connection() as conn:
        rows = conn.execute(
            q, {"model": model, "k": k, "n": queries_n, "seed": seed, "method": method}
        ).fetchall()
    scored = [len(set(r["ann"]) & set(r["exact"])) / len(r["exact"]) for r in rows if r["exact"]]
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


def index_status(db: Database, model: str | None = None) -> list[IndexStatus]:
    """Every model's HNSW index(es): kind, validity, size, m / ef_construction, and the progress of a
    build running now (``pg_stat_progress_create_index``). A model without an index has one row with
    ``index_name=None`` (and its progress, when its first build is running)."""
    if model is not None:
        identifiers.check_key(model)
    with contextlib.suppress(CbirError):  # opportunistic: a role that may not drop indexes still reads
        drop_stale_staging(db, model)
    out: list[IndexStatus] = []
    with db.connection(autocommit=True) as conn:
        encoders = conn.execute(queries.get("index", "encoders"), {"model": model}).fetchall()
        if model is not None and not encoders:
            from cbir_pg.encoders.registry import model_not_stored

            raise model_not_stored(model)
        for enc in encoders:
            key, dim, table_name = enc["key"], enc["dim"], enc["table_name"]
            qualified = f"cbir.{table_name}"
            if scalar(conn, "select to_regclass(%s)", (qualified,)) is None:
                out.append(IndexStatus(key, table_name, dim, 0))
                continue
            rows = int(
                scalar(conn, queries.get("index", "row_count", table=identifiers.embedding_table(key)))
            )
            prog_rows = conn.execute(queries.get("index", "table_progress"), {"table": qualified}).fetchall()
            progress = {
                r["index_name"]: _progress(r, pid=r["pid"], index_name=r["index_name"]) for r in prog_rows
            }
            idx_rows = conn.execute(queries.get("index", "hnsw_indexes"), {"table": qualified}).fetchall()
            for ix in idx_rows:
                name, valid, size, definition, opclass = (
                    ix["index_name"],
                    ix["valid"],
                    ix["size_bytes"],
                    ix["definition"],
                    ix["opclass"],
                )
                opts = _parse_options(ix["options"])
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
    return out


def drop_index(db: Database, model: str, *, concurrently: bool = False) -> list[str]:
    """Drop the model's HNSW indexes (both kinds); returns the names that existed."""
    conc = sql.SQL("concurrently") if concurrently else sql.SQL("")
    dropped = []
    with db.connection(autocommit=True) as conn:
        space = _space(conn, model)
        for kind, existing in (("hnsw", space.ann_index), ("hnsw_bq", space.binary_index)):
            exists = existing or scalar(
                conn, "select to_regclass(%s)", (f"cbir.{identifiers.index_name(model, kind)}",)
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
        conn.execute(queries.get("index", "refresh_search_functions"), {"model": model})
    return dropped


# ---------------------------------------------------------------------------- model lifecycle
def drop_embeddings(db: Database, model: str) -> int:
    """Drop a model's embedding table (and its indexes) and forget its encoder row; returns the number
    of vectors that were stored. Use it when the encoder's config changed and the vectors must be redone."""
    identifiers.check_key(model)
    table = identifiers.embedding_table(model)
    with db.connection() as conn:
        exists = scalar(
            conn, "select to_regclass(%s) is not null", (f"cbir.{identifiers.embedding_table_name(model)}",)
        )
        rows = scalar(conn, sql.SQL("select count(*) from {}").format(table)) if exists else 0
        conn.execute(identifiers.drop_embedding_table(model))
        deleted = conn.execute(queries.get("index", "encoder_delete"), {"key": model}).rowcount
    if not exists and not deleted:
        raise NotFoundError(f"no embeddings stored for model {model!r}")
    return rows
