"""The one writer (and reader) of evaluation runs: ``cbir.eval_run``, ``eval_query`` (binary COPY),
``eval_metric`` and ``eval_class_metric``, for every kind of run (retrieval, kNN, linear probe,
ablation, zero-shot). Its SQL is one block, ``sql/queries/runs.sql``. One policy for all kinds:

* **code version**: ``cbir_pg.__version__`` plus ``+g<commit>`` (``.dirty``) in a git checkout;
* **timings**: a JSON object that always has ``total_s`` (seconds, the whole run), so
  ``cbir_report.eval_runs.total_s`` is filled for every kind; finer steps (``topn_s``, ...) may follow;
* **JSON**: NaN/inf become null, numpy scalars plain numbers;
* **metrics** (``eval_metric``): a non-finite value is not stored (an undefined aggregate has no row);
* **class metrics** (``eval_class_metric``): NaN *is* stored (a class that was evaluated but whose value
  is undefined, e.g. absent from the index); the report views show it as null.

A run is written in the caller's transaction, all of it or nothing: a crash never leaves a half run.
"""

from __future__ import annotations

import math
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import psycopg
from psycopg.types.json import Jsonb

from cbir_pg.db import queries
from cbir_pg.db.database import Database, dict_cursor

if TYPE_CHECKING:
    from cbir_pg.eval.classification import ClassificationMetrics

RUN_KINDS = ("retrieval", "knn", "linear", "ablation", "zeroshot")


def q(name: str):
    return queries.get("runs", name)


@cache
def code_version() -> str:
    """``cbir_pg.__version__``, plus ``+g<commit>`` (and ``.dirty``) when running from a git checkout."""
    import cbir_pg

    version = cbir_pg.__version__
    root = Path(cbir_pg.__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return version

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=5
        ).stdout.strip()

    try:
        commit = git("rev-parse", "--short=12", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return version
    if not commit:
        return version
    return f"{version}+g{commit}{'.dirty' if dirty else ''}"


def clean_json(value: Any) -> Any:
    """NaN/inf become null and numpy scalars plain numbers, so the value is valid JSON."""
    if isinstance(value, dict):
        return {str(k): clean_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean_json(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class Metric(NamedTuple):
    """One ``cbir.eval_metric`` row (``index_size`` and ``seed`` are 0 outside the ablation)."""

    metric: str
    at: int
    average: str
    value: float | None
    index_size: int = 0
    seed: int = 0


class ClassMetric(NamedTuple):
    """One ``cbir.eval_class_metric`` row."""

    label_id: int
    metric: str
    at: int
    n_queries: int
    class_index_size: int
    value: float


# --------------------------------------------------------------------------- writing
def insert_run(
    conn: psycopg.Connection,
    *,
    kind: str,
    model: str,
    mode: str | None,
    params: dict[str, Any],
    index_params: dict[str, Any] | None = None,
    all_embedded: bool | None = None,
) -> int:
    """A new, unfinished run; returns its id. ``all_embedded``: whether every image in the run's scope
    had a vector (:func:`cbir_pg.eval.scope.check_scope`; ``None``: not known)."""
    if kind not in RUN_KINDS:
        raise ValueError(f"unknown run kind {kind!r}")
    if "datasets" in params and "scope_datasets" not in params:
        from cbir_pg.eval import scope

        params = {
            **params,
            "scope_datasets": scope.scope_datasets(conn, params["datasets"], scope.splits_of(params)),
        }
    row = (
        dict_cursor(conn)
        .execute(
            q("insert_run"),
            {
                "kind": kind,
                "model": model,
                "mode": mode,
                "params": Jsonb(clean_json(params)),
                "index_params": Jsonb(clean_json(index_params or {})),
                "code_version": code_version(),
                "all_embedded": all_embedded,
            },
        )
        .fetchone()
    )
    return int(row["id"])


def finish_run(
    conn: psycopg.Connection,
    run_id: int,
    *,
    n_queries: int,
    n_index: int,
    metrics: dict[str, Any],
    total_s: float,
    timings: dict[str, Any] | None = None,
    started_at: datetime | None = None,
    params: dict[str, Any] | None = None,
) -> None:
    """Counts, summary metrics and timings (``total_s`` always; ``timings`` adds finer steps); merges
    ``params`` into the stored ones; ``started_at`` overrides the insert time (when the work began)."""
    conn.execute(
        q("finish_run"),
        {
            "run_id": run_id,
            "n_queries": n_queries,
            "n_index": n_index,
            "metrics": Jsonb(clean_json(metrics)),
            "timings": Jsonb(clean_json({**(timings or {}), "total_s": float(total_s)})),
            "params": Jsonb(clean_json(params or {})),
            "started_at": started_at,
        },
    )


def merge_params(conn: psycopg.Connection, run_id: int, params: dict[str, Any]) -> None:
    """Merge ``params`` into a stored run's parameters (e.g. the id of its compared run)."""
    conn.execute(q("merge_params"), {"run_id": run_id, "params": Jsonb(clean_json(params))})


def write_queries(
    conn: psycopg.Connection,
    run_id: int,
    *,
    query_ids: np.ndarray,
    labels: np.ndarray,
    class_index_sizes: np.ndarray,
    neighbour_ids: np.ndarray,
    relevant: np.ndarray,
    similarities: np.ndarray,
    counts: np.ndarray,
) -> int:
    """Per-query top-N rows by binary COPY (only the neighbours actually returned; no padding)."""
    with conn.cursor() as cur, cur.copy(q("copy_eval_query")) as copy:
        copy.set_types(["int8", "int8", "int4", "int4", "int8[]", "bool[]", "float4[]"])
        for i in range(len(query_ids)):
            k = int(counts[i])
            lab = int(labels[i])
            copy.write_row(
                (
                    run_id,
                    int(query_ids[i]),
                    lab if lab >= 0 else None,
                    int(class_index_sizes[i]),
                    neighbour_ids[i, :k].tolist(),
                    relevant[i, :k].tolist(),
                    similarities[i, :k].astype(np.float32).tolist(),
                )
            )
    return len(query_ids)


def write_metrics(conn: psycopg.Connection, run_id: int, rows: Iterable[Metric | tuple]) -> None:
    """``eval_metric`` rows (:class:`Metric` or its tuple); non-finite values are not stored."""
    data = []
    for r in rows:
        m = r if isinstance(r, Metric) else Metric(*r)
        if m.value is None or not math.isfinite(float(m.value)):
            continue
        data.append({**m._asdict(), "run_id": run_id, "at": int(m.at), "value": float(m.value)})
    if data:
        with conn.cursor() as cur:
            cur.executemany(q("insert_metric"), data)


def write_class_metrics(conn: psycopg.Connection, run_id: int, rows: Iterable[ClassMetric | tuple]) -> None:
    """``eval_class_metric`` rows (:class:`ClassMetric` or its tuple); NaN is stored as NaN (shown as
    null by the views), ``None`` is not stored."""
    data = []
    for r in rows:
        c = r if isinstance(r, ClassMetric) else ClassMetric(*r)
        if c.value is None:
            continue
        data.append(
            {
                "run_id": run_id,
                "label_id": int(c.label_id),
                "metric": c.metric,
                "at": int(c.at),
                "n_queries": int(c.n_queries),
                "class_index_size": int(c.class_index_size),
                "value": float(c.value),
            }
        )
    if data:
        with conn.cursor() as cur:
            cur.executemany(q("insert_class_metric"), data)


def store_classification_run(
    db: Database,
    kind: str,
    model: str,
    *,
    mode: str | None,
    params: dict,
    test: ClassificationMetrics,
    val: ClassificationMetrics | None,
    at: int,
    seed: int,
    n_queries: int,
    n_index: int,
    seconds: float,
    class_sizes: dict[int, int],
    test_class_counts: dict[int, int] | None = None,
    extra_metrics: dict | None = None,
    extra_metric_rows: Iterable[Metric] = (),
    extra_class_rows: Iterable[ClassMetric] = (),
    all_embedded: bool | None = None,
) -> int:
    """Store a kNN or linear-probe run in one transaction and return its id.

    Test metrics go to ``eval_metric`` as (f1|auprc|auroc, micro|macro) at ``at``; per-class test values
    to ``eval_class_metric`` with the class's index size.
    """
    counts = test_class_counts or {}
    with db.connection() as conn:
        run_id = insert_run(conn, kind=kind, model=model, mode=mode, params=params, all_embedded=all_embedded)
        rows = [Metric(m, at, avg, v, 0, seed) for m, avg, v in test.as_rows()]
        write_metrics(conn, run_id, [*rows, *extra_metric_rows])
        class_rows = [
            ClassMetric(lab, metric, at, counts.get(lab, 0), class_sizes.get(lab, 0), v)
            for metric, per in test.per_class.items()
            for lab, v in per.items()
        ]
        write_class_metrics(conn, run_id, [*class_rows, *extra_class_rows])
        metrics = {"test": test.as_dict(), **({"val": val.as_dict()} if val else {}), **(extra_metrics or {})}
        finish_run(conn, run_id, n_queries=n_queries, n_index=n_index, metrics=metrics, total_s=seconds)
    return run_id


# --------------------------------------------------------------------------- reading
@dataclass
class StoredQueries:
    """A run's per-query rows, as arrays padded to the longest result (ids ``-1``, relevance False)."""

    query_ids: np.ndarray
    labels: np.ndarray
    class_index_sizes: np.ndarray
    neighbour_ids: np.ndarray
    relevant: np.ndarray
    similarities: np.ndarray


def load_queries(db: Database, run_id: int) -> StoredQueries:
    """Read back a run's ``cbir.eval_query`` rows, so any aggregate can be recomputed."""
    with db.connection() as conn:
        rows = conn.execute(q("run_queries"), {"run_id": run_id}).fetchall()
    width = max((len(r["neighbours"]) for r in rows), default=0)
    n = len(rows)
    ids = np.full((n, width), -1, dtype=np.int64)
    rel = np.zeros((n, width), dtype=bool)
    sims = np.full((n, width), np.nan)
    for i, r in enumerate(rows):
        k = len(r["neighbours"])
        ids[i, :k] = r["neighbours"]
        rel[i, :k] = r["relevant"]
        if r["similarities"] is not None:
            sims[i, :k] = r["similarities"]
    return StoredQueries(
        query_ids=np.array([r["query_image_id"] for r in rows], dtype=np.int64),
        labels=np.array([r["label_id"] for r in rows], dtype=np.int64),
        class_index_sizes=np.array([r["class_index_size"] for r in rows], dtype=np.int64),
        neighbour_ids=ids,
        relevant=rel,
        similarities=sims,
    )


def run_metrics(db: Database, run_id: int) -> dict[tuple[str, int, str], float]:
    """``{(metric, at, average): value}`` of one run."""
    with db.connection() as conn:
        rows = conn.execute(q("run_metrics"), {"run_id": run_id}).fetchall()
    return {(r["metric"], int(r["at"]), r["average"]): float(r["value"]) for r in rows}


@dataclass
class RunInfo:
    run_id: int
    model: str
    mode: str | None
    ef_search: int | None
    n_queries: int | None
    n_index: int | None
    finished_at: datetime | None


def latest_runs(db: Database, kind: str = "retrieval") -> list[RunInfo]:
    """The latest finished run of each model, mode and dataset scope (what the leaderboard shows)."""
    from psycopg.rows import class_row

    with db.connection() as conn, conn.cursor(row_factory=class_row(RunInfo)) as cur:
        return cur.execute(q("latest_runs"), {"kind": kind}).fetchall()


TABLE2_NS = (1, 3, 5, 10)


def table2(db: Database) -> Any:
    """The paper's Table 2 layout, read from ``cbir_report.leaderboard``: one row per model (and mode,
    dataset scope, profile and vector source), columns ``(micro|macro, P@1|P@3|P@5|P@10)`` and ``(run, id|n_queries|n_index)``.
    Returns a :class:`pandas.DataFrame`."""
    import pandas as pd

    with db.connection() as conn:
        cur = conn.execute(q("leaderboard"))
        names = [d.name for d in cur.description]
        rows = cur.fetchall()
    df = pd.DataFrame(rows, columns=names)  # rows are dicts: columns by name
    columns = pd.MultiIndex.from_tuples([(avg, f"P@{n}") for avg in ("micro", "macro") for n in TABLE2_NS])
    out = pd.DataFrame(
        [[row[f"p{n}_{avg}"] for avg in ("micro", "macro") for n in TABLE2_NS] for _, row in df.iterrows()],
        columns=columns,
        index=pd.MultiIndex.from_frame(df[["model", "mode", "scope", "profile", "vectors"]])
        if len(df)
        else None,
        dtype=float,
    )
    if len(df):
        out[("run", "id")] = df["run_id"].to_numpy()
        out[("run", "n_queries")] = df["n_queries"].to_numpy()
        out[("run", "n_index")] = df["n_index"].to_numpy()
    return out
