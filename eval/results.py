"""Database side of the analyses: read a split's labels and vectors, and store a run's results in
``cbir.eval_run`` / ``cbir.eval_metric`` / ``cbir.eval_class_metric`` (read back through the
``cbir_report.knn_results``, ``linear_results`` and ``ablation`` views of ``sql/schema/50_analysis.sql``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from psycopg.types.json import Jsonb

from cbir_pg.db import identifiers, queries
from cbir_pg.db.connect import connection
from cbir_pg.errors import NotFoundError
from cbir_pg.eval.classification import ClassificationMetrics


def q(name: str, model: str | None = None):
    """A query of ``sql/queries/analysis.sql``, with the model's embedding table filled in."""
    if model is None:
        return queries.get("analysis", name)
    return queries.get("analysis", name, table=identifiers.embedding_table(model))


def check_model(conn, model: str) -> None:
    identifiers.check_key(model)
    row = conn.execute(q("encoder_exists"), {"model": model}).fetchone()
    if not row or not row[0]:
        raise NotFoundError(f"no embeddings for model {model!r}: run `cbir-pg ingest --model {model}` first")


@dataclass
class SplitData:
    """Image ids, label ids and (optionally) the ``(n, d)`` vectors of one split."""

    split: str
    ids: np.ndarray
    labels: np.ndarray
    X: np.ndarray | None = None


def _datasets(datasets: Sequence[str] | None) -> list[str] | None:
    return list(datasets) if datasets else None


def split_ids(dsn: str, model: str, split: str, datasets: Sequence[str] | None = None) -> SplitData:
    with connection(dsn) as conn:
        check_model(conn, model)
        rows = conn.execute(
            q("split_ids", model), {"split": split, "datasets": _datasets(datasets)}
        ).fetchall()
    return SplitData(
        split, np.array([r[0] for r in rows], dtype=np.int64), np.array([r[1] for r in rows], dtype=np.int64)
    )


def load_split(dsn: str, model: str, split: str, datasets: Sequence[str] | None = None) -> SplitData:
    """The labelled, non-excluded images of ``split`` with their vectors (float32)."""
    with connection(dsn) as conn:
        check_model(conn, model)
        cur = conn.cursor(binary=True)
        cur.execute(q("split_embeddings", model), {"split": split, "datasets": _datasets(datasets)})
        ids, labels, vecs = [], [], []
        for image_id, label_id, emb in cur:
            ids.append(image_id)
            labels.append(label_id)
            vecs.append(emb.to_numpy() if hasattr(emb, "to_numpy") else np.asarray(emb))
    X = np.vstack(vecs).astype(np.float32) if vecs else np.zeros((0, 0), dtype=np.float32)
    return SplitData(split, np.array(ids, dtype=np.int64), np.array(labels, dtype=np.int64), X)


def class_sizes(labels: Iterable[int]) -> dict[int, int]:
    u, c = np.unique(np.asarray(list(labels), dtype=np.int64), return_counts=True)
    return {int(a): int(b) for a, b in zip(u, c, strict=True)}


def _clean(value):
    """JSON-safe: nan/inf become null, numpy scalars plain Python."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _code_version() -> str | None:
    try:
        from cbir_pg import __version__

        return str(__version__)
    except Exception:
        return None


def insert_run(conn, kind: str, model: str, mode: str | None, params: dict) -> int:
    row = conn.execute(
        q("insert_run"),
        {
            "kind": kind,
            "model": model,
            "mode": mode,
            "params": Jsonb(_clean(params)),
            "code_version": _code_version(),
        },
    ).fetchone()
    return int(row[0])


def insert_metrics(conn, run_id: int, rows: Iterable[tuple]) -> None:
    """Rows ``(metric, at, average, index_size, seed, value)``; non-finite values are skipped."""
    with conn.cursor() as cur:
        cur.executemany(
            q("insert_metric"),
            [
                {
                    "run_id": run_id,
                    "metric": m,
                    "at": at,
                    "average": avg,
                    "index_size": size,
                    "seed": seed,
                    "value": float(v),
                }
                for m, at, avg, size, seed, v in rows
                if v is not None and math.isfinite(float(v))
            ],
        )


def insert_class_metrics(conn, run_id: int, rows: Iterable[tuple]) -> None:
    """Rows ``(label_id, metric, at, n_queries, class_index_size, value)``; non-finite values skipped."""
    with conn.cursor() as cur:
        cur.executemany(
            q("insert_class_metric"),
            [
                {
                    "run_id": run_id,
                    "label_id": lab,
                    "metric": m,
                    "at": at,
                    "n_queries": n,
                    "class_index_size": size,
                    "value": float(v),
                }
                for lab, m, at, n, size, v in rows
                if v is not None and math.isfinite(float(v))
            ],
        )


def finish_run(conn, run_id: int, *, n_queries: int, n_index: int, metrics: dict, seconds: float) -> None:
    conn.execute(
        q("finish_run"),
        {
            "run_id": run_id,
            "n_queries": n_queries,
            "n_index": n_index,
            "metrics": Jsonb(_clean(metrics)),
            "timings": Jsonb({"seconds": round(seconds, 3)}),
        },
    )


def store_classification_run(
    dsn: str,
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
    extra_metric_rows: Iterable[tuple] = (),
    extra_class_rows: Iterable[tuple] = (),
) -> int:
    """Store a kNN or linear-probe run in one transaction and return its id.

    Test metrics go to ``eval_metric`` as (f1|auprc|auroc, micro|macro) at ``at``; per-class test values
    to ``eval_class_metric`` with the class's index size.
    """
    counts = test_class_counts or {}
    with connection(dsn) as conn:
        run_id = insert_run(conn, kind, model, mode, params)
        rows = [(m, at, avg, 0, seed, v) for m, avg, v in test.as_rows()]
        insert_metrics(conn, run_id, [*rows, *extra_metric_rows])
        class_rows = [
            (lab, metric, at, counts.get(lab, 0), class_sizes.get(lab, 0), v)
            for metric, per in test.per_class.items()
            for lab, v in per.items()
        ]
        insert_class_metrics(conn, run_id, [*class_rows, *extra_class_rows])
        metrics = {"test": test.as_dict(), **({"val": val.as_dict()} if val else {}), **(extra_metrics or {})}
        finish_run(conn, run_id, n_queries=n_queries, n_index=n_index, metrics=metrics, seconds=seconds)
    return run_id
