"""Writing and reading evaluation runs: ``cbir.eval_run``, ``eval_query`` (binary COPY), ``eval_metric``,
``eval_class_metric``; and reading the ``cbir_report`` views back (``latest_runs``, ``table2``).

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
from typing import Any

import numpy as np
import psycopg
from psycopg.types.json import Jsonb

from cbir_pg.db import queries
from cbir_pg.db.connect import connection


@cache
def code_version() -> str:
    """``cbir_pg.__version__``, plus ``+g<commit>`` (and ``.dirty``) when running from a git checkout."""
    import cbir_pg

    version = cbir_pg.__version__
    root = Path(cbir_pg.__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return version
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return version
    if not commit:
        return version
    return f"{version}+g{commit}{'.dirty' if dirty else ''}"


def _json(value: Any) -> Any:
    """NaN/inf become null and numpy scalars plain numbers, so the value is valid JSON."""
    if isinstance(value, dict):
        return {str(k): _json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return None if not math.isfinite(float(value)) else float(value)
    return value


# --------------------------------------------------------------------------- writing
def insert_run(
    conn: psycopg.Connection,
    *,
    kind: str,
    model: str,
    mode: str | None,
    params: dict[str, Any],
    index_params: dict[str, Any],
    code: str | None = None,
) -> int:
    row = conn.execute(
        queries.get("eval", "insert_run"),
        {
            "kind": kind,
            "model": model,
            "mode": mode,
            "params": Jsonb(_json(params)),
            "index_params": Jsonb(_json(index_params)),
            "code_version": code or code_version(),
        },
    ).fetchone()
    return int(row[0])


def finish_run(
    conn: psycopg.Connection,
    run_id: int,
    *,
    n_queries: int,
    n_index: int,
    metrics: dict[str, Any],
    timings: dict[str, Any],
    started_at: datetime | None = None,
    params: dict[str, Any] | None = None,
) -> None:
    conn.execute(
        queries.get("eval", "finish_run"),
        {
            "run_id": run_id,
            "n_queries": n_queries,
            "n_index": n_index,
            "metrics": Jsonb(_json(metrics)),
            "timings": Jsonb(_json(timings)),
            "params": Jsonb(_json(params or {})),
        },
    )
    if started_at is not None:
        conn.execute("update cbir.eval_run set started_at = %s where id = %s", (started_at, run_id))


def finish_run_params(conn: psycopg.Connection, run_id: int, params: dict[str, Any]) -> None:
    """Merge ``params`` into a stored run's parameters (e.g. the id of its compared run)."""
    conn.execute(
        "update cbir.eval_run set params = params || %s where id = %s", (Jsonb(_json(params)), run_id)
    )


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
    with conn.cursor() as cur, cur.copy(queries.get("eval", "copy_eval_query")) as copy:
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


def write_metrics(conn: psycopg.Connection, run_id: int, rows: Iterable[tuple[str, int, str, float]]) -> None:
    """``(metric, at, average, value)`` rows of ``cbir.eval_metric``; NaN values are skipped."""
    data = [
        {"run_id": run_id, "metric": m, "at": int(at), "average": avg, "value": float(v)}
        for m, at, avg, v in rows
        if v is not None and math.isfinite(float(v))
    ]
    if data:
        with conn.cursor() as cur:
            cur.executemany(queries.get("eval", "insert_metric"), data)


def write_class_metrics(
    conn: psycopg.Connection, run_id: int, rows: Iterable[tuple[int, str, int, int, int, float]]
) -> None:
    """``(label_id, metric, at, n_queries, class_index_size, value)`` rows; NaN is stored as NaN (a
    class absent from the index), and the views show it as null."""
    data = [
        {
            "run_id": run_id,
            "label_id": int(lab),
            "metric": m,
            "at": int(at),
            "n_queries": int(nq),
            "class_index_size": int(size),
            "value": float(v),
        }
        for lab, m, at, nq, size, v in rows
    ]
    if data:
        with conn.cursor() as cur:
            cur.executemany(queries.get("eval", "insert_class_metric"), data)


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


def load_queries(dsn: str, run_id: int) -> StoredQueries:
    """Read back a run's ``cbir.eval_query`` rows, so any aggregate can be recomputed."""
    with connection(dsn) as conn:
        rows = conn.execute(queries.get("eval", "run_queries"), {"run_id": run_id}).fetchall()
    width = max((len(r[3]) for r in rows), default=0)
    q = len(rows)
    ids = np.full((q, width), -1, dtype=np.int64)
    rel = np.zeros((q, width), dtype=bool)
    sims = np.full((q, width), np.nan)
    for i, r in enumerate(rows):
        k = len(r[3])
        ids[i, :k] = r[3]
        rel[i, :k] = r[4]
        if r[5] is not None:
            sims[i, :k] = r[5]
    return StoredQueries(
        query_ids=np.array([r[0] for r in rows], dtype=np.int64),
        labels=np.array([r[1] for r in rows], dtype=np.int64),
        class_index_sizes=np.array([r[2] for r in rows], dtype=np.int64),
        neighbour_ids=ids,
        relevant=rel,
        similarities=sims,
    )


def run_metrics(dsn: str, run_id: int) -> dict[tuple[str, int, str], float]:
    """``{(metric, at, average): value}`` of one run."""
    with connection(dsn) as conn:
        rows = conn.execute(queries.get("eval", "run_metrics"), {"run_id": run_id}).fetchall()
    return {(m, int(at), avg): float(v) for m, at, avg, v in rows}


@dataclass
class RunInfo:
    run_id: int
    model: str
    mode: str | None
    ef_search: int | None
    n_queries: int | None
    n_index: int | None
    finished_at: datetime | None


def latest_runs(dsn: str, kind: str = "retrieval") -> list[RunInfo]:
    """The latest finished run of each model, mode and dataset scope (what the leaderboard shows)."""
    with connection(dsn) as conn:
        rows = conn.execute(queries.get("eval", "latest_runs"), {"kind": kind}).fetchall()
    return [RunInfo(*r) for r in rows]


TABLE2_NS = (1, 3, 5, 10)


def table2(dsn: str) -> Any:
    """The paper's Table 2 layout, read from ``cbir_report.leaderboard``: one row per model (and mode,
    dataset scope, profile and vector source), columns ``(micro|macro, P@1|P@3|P@5|P@10)`` and ``(run, id|n_queries|n_index)``. Returns a :class:`pandas.DataFrame`."""
    import pandas as pd

    with connection(dsn) as conn:
        cur = conn.execute(queries.get("eval", "leaderboard"))
        names = [d.name for d in cur.description]
        rows = cur.fetchall()
    df = pd.DataFrame(rows, columns=names)
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
