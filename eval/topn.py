"""The batched SQL top-N runner: every query image's nearest index images, computed in PostgreSQL.

One statement per batch of query ids (``topn_batch`` in ``sql/queries/eval.sql``): each query's own
stored vector drives a ``LATERAL`` subquery ordered by pgvector's cosine distance operator ``<=>``
with ``LIMIT n``. Query vectors never leave the server.

How a run is laid out:

* A coordinating connection opens a ``REPEATABLE READ`` transaction and exports its snapshot
  (``pg_export_snapshot()``). Every worker connection imports it, so all of them, and the class sizes
  computed by the coordinator, see exactly the same images and vectors even while ingest is writing.
* Each connection builds the index set in a temp table ``pg_temp.eval_index_set (image_id, label_id)``
  from an :class:`IndexFilter` (splits, datasets, excluded images, an explicit id subset), entirely in
  SQL. The LATERAL subquery joins it, so the filter never travels as a list of ids per query.
* Batches of query ids are streamed from a shared queue to ``connections`` threads, each with its own
  connection (psycopg releases the GIL while it waits on the server).

Modes:

* ``ann``: ``hnsw.ef_search = min(1000, max(ef_search, n))``; without ``ef_search`` the default comes
  from the measured curve (:func:`cbir_pg.rules.default_eval_ef_search`: by the number of vectors in the
  HNSW graph, ``max(index set, the table's row estimate)``, for n <= 10; otherwise 16 n as in round 1;
  docs/scaling.md) and ``hnsw.iterative_scan = strict_order``, so a filter that removes index-scan rows
  does not shorten a result and results stay in exact distance order. A query whose ANN result is still
  shorter than it can be (``min(n, index size)``, e.g. after ``hnsw.max_scan_tuples``) is re-run exactly;
  the count is reported as :attr:`TopN.exact_fallbacks`.
* ``exact``: ``enable_indexscan = off`` and ``enable_bitmapscan = off``: a sequential scan and a
  top-N sort, which is exact.

Ties: rows are ordered by distance, then by ``image_id`` (ascending). In exact mode that makes the
order fully deterministic; in ann mode it orders the rows the index returned.

A query that is itself an index image is never its own neighbour.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import psycopg
from psycopg import sql

from cbir_pg.cohort import Cohort
from cbir_pg.db import identifiers, queries
from cbir_pg.db.database import Database, dict_cursor, scalar, wrap_db_errors
from cbir_pg.errors import ConfigError, NotFoundError
from cbir_pg.rules import MAX_EF_SEARCH, check_ef_search, default_eval_ef_search

MODES = ("ann", "exact")

ProgressCallback = Callable[[int, int], None]


@dataclass(frozen=True)
class IndexFilter:
    """Which images form the index (the searchable set). ``None`` means no restriction; all the
    conditions apply together. ``image_ids`` is an explicit subset (e.g. for the index-size ablation);
    it is intersected with the other conditions, so pass ``splits=None`` to use the ids alone.
    ``cohort`` (a :class:`cbir_pg.cohort.Cohort`, e.g. a saved one by name) restricts it further to the
    images of that cohort (``cbir.cohort_images``), the same set a search among that cohort sees."""

    splits: tuple[str, ...] | None = ("train",)
    datasets: tuple[str, ...] | None = None
    include_excluded: bool = False
    image_ids: tuple[int, ...] | None = None
    cohort: Cohort | None = None

    def params(self) -> dict[str, Any]:
        return {
            "splits": list(self.splits) if self.splits is not None else None,
            "datasets": list(self.datasets) if self.datasets is not None else None,
            "include_excluded": bool(self.include_excluded),
            "ids": [int(i) for i in self.image_ids] if self.image_ids is not None else None,
            "cohort": self.cohort.sql() if self.cohort is not None else None,
        }

    def describe(self) -> dict[str, Any]:
        """JSON-friendly description for a run's stored parameters (explicit ids are counted, not listed)."""
        return {
            "splits": list(self.splits) if self.splits is not None else None,
            "datasets": list(self.datasets) if self.datasets is not None else None,
            "include_excluded": bool(self.include_excluded),
            "n_explicit_ids": len(self.image_ids) if self.image_ids is not None else None,
            **({"cohort": self.cohort.as_json()} if self.cohort is not None else {}),
        }


@dataclass
class TopN:
    """Top-n neighbours of each query, padded where fewer exist (ids and labels ``-1``, similarity NaN).

    ``relevant[i, j]`` is true when neighbour ``j`` has the same harmonised label as query ``i``
    (computed in SQL). ``counts[i]`` is how many neighbours query ``i`` got. Similarity is
    ``1 - cosine distance``. ``index_class_sizes`` maps label id (``-1``: unlabelled) to its number of
    index images, read in the same snapshot as the search.
    """

    query_ids: np.ndarray  # (q,) int64
    query_labels: np.ndarray  # (q,) int64, -1 where unlabelled
    neighbour_ids: np.ndarray  # (q, n) int64
    neighbour_labels: np.ndarray  # (q, n) int64
    similarities: np.ndarray  # (q, n) float64
    relevant: np.ndarray  # (q, n) bool
    counts: np.ndarray  # (q,) int64
    query_in_index: np.ndarray  # (q,) bool: the query is itself an index image (never its own neighbour)
    n: int
    mode: str
    ef_search: int | None
    n_index: int
    index_class_sizes: dict[int, int]
    seconds: float
    exact_fallbacks: int = 0
    plan_uses_index: bool | None = None
    missing_query_ids: list[int] = field(default_factory=list)

    @property
    def queries_per_second(self) -> float:
        return len(self.query_ids) / self.seconds if self.seconds > 0 else float("inf")

    def class_sizes_for(self, labels: np.ndarray) -> np.ndarray:
        """Index class size of each label in ``labels`` (0 for a class absent from the index)."""
        return np.array(
            [self.index_class_sizes.get(int(lab), 0) if lab >= 0 else 0 for lab in labels], dtype=np.int64
        )


# --------------------------------------------------------------------------- session settings
def _settings(
    mode: str, n: int, ef_search: int | None, vectors: int = 0
) -> tuple[dict[str, str], int | None]:
    if mode == "ann":
        ef = min(MAX_EF_SEARCH, max(ef_search or default_eval_ef_search(n, vectors), n))
        return {"hnsw.ef_search": str(ef), "hnsw.iterative_scan": "strict_order"}, ef
    return {"enable_indexscan": "off", "enable_bitmapscan": "off"}, None


def _apply(conn: psycopg.Connection, settings: dict[str, str]) -> None:
    for name, value in settings.items():
        conn.execute("select set_config(%s, %s, true)", (name, value))


EXACT = {"enable_indexscan": "off", "enable_bitmapscan": "off"}
ANN_RESET = {"enable_indexscan": "on", "enable_bitmapscan": "on"}


def _open(db: Database, snapshot: str | None) -> psycopg.Connection:
    """A repeatable-read connection, joined to the coordinator's exported ``snapshot`` when given."""
    conn = db.connect()
    conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    if snapshot is not None:
        conn.execute(sql.SQL("set transaction snapshot {}").format(sql.Literal(snapshot)))
    return conn


def _build_index_set(conn: psycopg.Connection, table: sql.Identifier, index_filter: IndexFilter) -> None:
    conn.execute(queries.get("eval", "create_index_set"))
    conn.execute(queries.get("eval", "fill_index_set", table=table), index_filter.params())
    conn.execute("analyze pg_temp.eval_index_set")


def _plan_uses_index(
    conn: psycopg.Connection, stmt: sql.Composable, params: dict[str, Any], table_name: str
) -> bool:
    plan = scalar(conn, sql.SQL("explain (format json) ") + stmt, params)
    plan = plan if not isinstance(plan, str) else json.loads(plan)

    def walk(node: dict[str, Any]) -> bool:
        if (
            node.get("Node Type") == "Index Scan"
            and node.get("Relation Name") == table_name
            and "Order By" in node
        ):
            return True
        return any(walk(child) for child in node.get("Plans", []))

    return walk(plan[0]["Plan"])


def encoder_table(conn: psycopg.Connection, model: str) -> tuple[sql.Identifier, str]:
    """The embedding table of ``model``; a clear error when the model or its vectors are unknown."""
    identifiers.check_key(model)
    row = dict_cursor(conn).execute(queries.get("eval", "encoder"), {"model": model}).fetchone()
    if row is None:
        from cbir_pg.encoders.registry import model_not_stored

        raise model_not_stored(model)
    if not row["has_table"]:
        raise NotFoundError(
            f"model {model!r} has no embedding table yet (run cbir-pg ingest --model {model})"
        )
    return identifiers.embedding_table(model), identifiers.embedding_table_name(model)


def search_expressions(conn: psycopg.Connection, model: str) -> tuple[sql.Composable, sql.Composable]:
    """The stored and the query vector as the model's HNSW index covers them: ``embedding``, or
    ``embedding::halfvec(d)`` when a ``vector`` column is indexed as ``halfvec``
    (``cbir.model_vector_space``), so ann mode uses the index whatever its storage type."""
    with dict_cursor(conn) as cur:
        row = cur.execute(
            "select distance_expr, dim from cbir.model_vector_space(%(model)s)", {"model": model}
        ).fetchone()
    expr, dim = (row["distance_expr"], row["dim"]) if row else (None, 0)
    if expr and expr.startswith("(e.embedding::halfvec("):
        d = sql.Literal(int(dim))
        return (
            sql.SQL("(e.embedding::halfvec({}))").format(d),
            sql.SQL("(q.embedding::halfvec({}))").format(d),
        )
    return sql.SQL("e.embedding"), sql.SQL("q.embedding")


# --------------------------------------------------------------------------- the runner's steps
def _statement(
    coord: psycopg.Connection, model: str, mode: str, n: int
) -> tuple[sql.Identifier, str, sql.Composable, int]:
    """The model's table (identifier and name), the batch statement and how many rows it fetches per query."""
    table, table_name = encoder_table(coord, model)
    # ann: the expression the HNSW index covers; exact: the stored vectors at full precision
    e_vec, q_vec = (
        search_expressions(coord, model)
        if mode == "ann"
        else (sql.SQL("e.embedding"), sql.SQL("q.embedding"))
    )
    stmt = queries.get("eval", "topn_batch", table=table, e_vec=e_vec, q_vec=q_vec)
    # a halfvec index over full-precision vectors: over-fetch and settle the order at full precision
    fetch = 2 * n if e_vec.as_string(coord) != "e.embedding" else n
    return table, table_name, stmt, fetch


def _check_args(mode: str, n: int, ef_search: int | None, batch_size: int, connections: int) -> None:
    if mode not in MODES:
        raise ConfigError(f"unknown mode {mode!r}: use 'ann' or 'exact'")
    if n < 1:
        raise ConfigError(f"n must be at least 1, got {n}")
    if batch_size < 1 or connections < 1:
        raise ConfigError("batch_size and connections must be positive")
    check_ef_search(ef_search)


def _index_facts(
    coord: psycopg.Connection, table: sql.Identifier, qids: np.ndarray
) -> tuple[dict[int, int], set[int], list[int]]:
    """In the run's snapshot: index size per class, which queries are index images themselves, and
    which queries have no stored vector."""
    class_sizes = {
        int(r["label_id"]): int(r["n"]) for r in coord.execute(queries.get("eval", "index_class_sizes"))
    }
    in_index = {
        int(r["image_id"])
        for r in coord.execute(queries.get("eval", "index_contains"), {"ids": qids.tolist()})
    }
    has_vec = {
        int(r["image_id"])
        for r in coord.execute(
            sql.SQL("select image_id from {} where image_id = any(%s::bigint[])").format(table),
            (qids.tolist(),),
        )
    }
    return class_sizes, in_index, [int(i) for i in qids if int(i) not in has_vec]


def _table_rows(coord: psycopg.Connection, table_name: str) -> int:
    """The planner's row estimate of the model's table (the HNSW graph's size; set by ``CREATE INDEX``,
    ``ANALYZE`` and ``VACUUM``), 0 when unknown: no count over millions of rows."""
    row = coord.execute(
        "select greatest(reltuples, 0)::bigint as n from pg_class where oid = to_regclass(%s)",
        (f"cbir.{table_name}",),
    ).fetchone()
    if row is None:
        return 0
    return int(row["n"] if isinstance(row, dict) else row[0])


def _query_labels(coord: psycopg.Connection, qids: np.ndarray) -> list[int]:
    rows = coord.execute(
        "select id, coalesce(label_id, -1) as label_id from cbir.image where id = any(%s::bigint[])",
        (qids.tolist(),),
    ).fetchall()
    label_of = {int(r["id"]): int(r["label_id"]) for r in rows}
    return [label_of.get(int(i), -1) for i in qids]


# --------------------------------------------------------------------------- the runner
class _Neighbours:
    """The result arrays of :func:`topn`, filled batch by batch (by several threads: each batch writes
    only its own query rows)."""

    def __init__(self, q: int, n: int):
        self.ids = np.full((q, n), -1, dtype=np.int64)
        self.labels = np.full((q, n), -1, dtype=np.int64)
        self.sims = np.full((q, n), np.nan, dtype=np.float64)
        self.relevant = np.zeros((q, n), dtype=bool)
        self.counts = np.zeros(q, dtype=np.int64)

    def fill(self, rows: list[dict], idx: np.ndarray) -> None:
        """Store one statement's rows for the queries ``idx`` (rows sorted by ord, distance, image id)."""
        if not rows:
            return
        ords = np.fromiter((r["ord"] for r in rows), dtype=np.int64, count=len(rows)) - 1
        # the rank is the position within its query
        first = np.r_[0, np.flatnonzero(np.diff(ords)) + 1]
        starts = np.repeat(first, np.diff(np.r_[first, len(ords)]))
        rank = np.arange(len(ords)) - starts
        target = idx[ords]
        self.ids[target, rank] = [r["image_id"] for r in rows]
        self.labels[target, rank] = [-1 if r["label_id"] is None else r["label_id"] for r in rows]
        self.sims[target, rank] = [1.0 - r["distance"] for r in rows]
        self.relevant[target, rank] = [r["relevant"] for r in rows]
        np.add.at(self.counts, target, 1)

    def arrays(self) -> dict[str, np.ndarray]:
        """The :class:`TopN` fields these arrays fill."""
        return {
            "neighbour_ids": self.ids,
            "neighbour_labels": self.labels,
            "similarities": self.sims,
            "relevant": self.relevant,
            "counts": self.counts,
        }

    def reset(self, idx: np.ndarray) -> None:
        """Forget what was stored for the queries ``idx`` (before their exact re-run)."""
        self.ids[idx] = -1
        self.labels[idx] = -1
        self.sims[idx] = np.nan
        self.relevant[idx] = False
        self.counts[idx] = 0


def _progress(progress: bool | ProgressCallback, q: int, label: str):
    """``(callback, bar)``: the caller's callable, a rich bar (closed by the caller) or nothing."""
    if callable(progress):
        return progress, None
    if progress and q:
        from cbir_pg.progress import progress_bar

        bar = progress_bar(q, label, unit="queries")
        return bar, bar
    return None, None


@dataclass
class _Plan:
    """What every worker connection needs to run its share of the queries."""

    stmt: sql.Composable
    table: sql.Composable
    fetch: int
    index_filter: IndexFilter
    settings: dict
    snapshot: str
    mode: str
    n: int
    batch_size: int


def _run_batches(
    db: Database,
    plan: _Plan,
    qids: np.ndarray,
    expected: np.ndarray,
    out: _Neighbours,
    connections: int,
    callback: ProgressCallback | None,
) -> int:
    """Run the batches on ``connections`` snapshot-sharing connections; ann queries that came back short
    (the HNSW filter left fewer than ``expected`` rows) are re-run exactly. Returns how many were."""
    q = len(qids)
    work: queue.Queue[int] = queue.Queue()
    for start in range(0, q, plan.batch_size):
        work.put(start)
    lock = threading.Lock()
    done = [0]
    fallbacks = [0]
    stop = threading.Event()

    def fill(conn: psycopg.Connection, idx: np.ndarray) -> None:
        params = {"query_ids": qids[idx].tolist(), "n": plan.n, "fetch": plan.fetch}
        out.fill(conn.execute(plan.stmt, params, binary=True).fetchall(), idx)

    def worker() -> None:
        conn = _open(db, plan.snapshot)
        try:
            _build_index_set(conn, plan.table, plan.index_filter)
            _apply(conn, plan.settings)
            while not stop.is_set():
                try:
                    start = work.get_nowait()
                except queue.Empty:
                    return
                idx = np.arange(start, min(start + plan.batch_size, q))
                fill(conn, idx)
                short = idx[out.counts[idx] < expected[idx]]
                if plan.mode == "ann" and len(short):
                    out.reset(short)
                    _apply(conn, EXACT)
                    fill(conn, short)
                    _apply(conn, ANN_RESET)
                    with lock:
                        fallbacks[0] += len(short)
                with lock:
                    done[0] += len(idx)
                    if callback is not None:
                        callback(done[0], q)
        except BaseException:
            stop.set()
            raise
        finally:
            conn.close()

    n_workers = max(1, min(connections, (q + plan.batch_size - 1) // plan.batch_size))
    with ThreadPoolExecutor(max_workers=n_workers, thread_name_prefix="cbir-topn") as pool:
        futures = [pool.submit(worker) for _ in range(n_workers)] if q else []
        for fut in futures:
            fut.result()
    return fallbacks[0]


@dataclass
class _Facts:
    """What the coordinator reads in the run's snapshot: index size per class, which queries are index
    images or lack a vector, the queries' labels; the ef_search used and whether the plan uses HNSW."""

    class_sizes: dict[int, int]
    in_index: set[int]
    missing: list[int]
    query_labels: list[int]
    ef: int | None
    plan_uses_index: bool | None

    @property
    def n_index(self) -> int:
        return sum(self.class_sizes.values())

    def expected(self, qids: np.ndarray, n: int) -> np.ndarray:
        """How many neighbours each query can get: ``n``, or the index size less the query itself."""
        return np.array(
            [min(n, self.n_index - (1 if int(i) in self.in_index else 0)) for i in qids], dtype=np.int64
        )


def _coordinate(
    coord: psycopg.Connection,
    model: str,
    qids: np.ndarray,
    index_filter: IndexFilter,
    *,
    mode: str,
    n: int,
    ef_search: int | None,
    batch_size: int,
) -> tuple[_Plan, _Facts]:
    """On the coordinating connection: export the snapshot, build the index set, read its facts and
    settle the session settings and the statement every worker runs."""
    table, table_name, stmt, fetch = _statement(coord, model, mode, n)
    snapshot = scalar(coord, "select pg_export_snapshot()")
    _build_index_set(coord, table, index_filter)
    class_sizes, in_index, missing = _index_facts(coord, table, qids)
    n_index = sum(class_sizes.values())
    settings, ef = _settings(mode, n, ef_search, max(n_index, _table_rows(coord, table_name)))
    query_labels = _query_labels(coord, qids)
    plan_uses_index: bool | None = None
    if len(qids):
        _apply(coord, settings)
        plan_uses_index = _plan_uses_index(
            coord, stmt, {"query_ids": qids[:batch_size].tolist(), "n": n, "fetch": fetch}, table_name
        )
    plan = _Plan(stmt, table, fetch, index_filter, settings, snapshot, mode, n, batch_size)
    return plan, _Facts(class_sizes, in_index, missing, query_labels, ef, plan_uses_index)


@wrap_db_errors
def topn(
    db: Database,
    model: str,
    *,
    query_ids: Sequence[int],
    index_filter: IndexFilter,
    n: int,
    mode: str = "ann",
    ef_search: int | None = None,
    batch_size: int = 256,
    connections: int = 2,
    progress: bool | ProgressCallback = True,
) -> TopN:
    """Top-``n`` index images of every query image, by cosine distance, computed in SQL.

    ``progress``: ``True`` shows a progress bar (queries/s) on stderr, ``False`` nothing, or a callable
    ``(done, total)``. See the module docstring for modes, ties and the snapshot.

    Steps: check the arguments, then on one coordinating connection export a snapshot, build the index
    set and read its facts (class sizes, which queries are in it or lack a vector, their labels); the
    batches then run on ``connections`` connections that share the snapshot (:func:`_run_batches`).
    """
    _check_args(mode, n, ef_search, batch_size, connections)
    qids = np.asarray(list(query_ids), dtype=np.int64)
    q = len(qids)
    out = _Neighbours(q, n)

    coord = _open(db, None)
    reporter = None
    try:
        plan, facts = _coordinate(
            coord, model, qids, index_filter, mode=mode, n=n, ef_search=ef_search, batch_size=batch_size
        )
        callback, reporter = _progress(progress, q, f"top-{n} {mode}")
        t0 = time.perf_counter()
        fallbacks = _run_batches(db, plan, qids, facts.expected(qids, n), out, connections, callback)
        seconds = time.perf_counter() - t0
    finally:
        if reporter is not None:
            reporter.close()
        coord.close()

    missing_set = set(facts.missing)
    fallback_count = fallbacks - sum(1 for i in qids if int(i) in missing_set) if mode == "ann" else 0
    return TopN(
        query_ids=qids,
        query_labels=np.asarray(facts.query_labels, dtype=np.int64).reshape(q),
        **out.arrays(),
        query_in_index=np.array([int(i) in facts.in_index for i in qids], dtype=bool),
        n=n,
        mode=mode,
        ef_search=facts.ef,
        n_index=facts.n_index,
        index_class_sizes=facts.class_sizes,
        seconds=seconds,
        exact_fallbacks=max(0, fallback_count),
        plan_uses_index=facts.plan_uses_index,
        missing_query_ids=facts.missing,
    )
