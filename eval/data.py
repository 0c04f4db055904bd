"""What the analyses read: a split's image ids, labels and (optionally) vectors, and the named queries of
``sql/queries/analysis.sql``. Runs are written by :mod:`cbir_pg.eval.runs`."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from cbir_pg.db import identifiers, queries
from cbir_pg.db.database import scalar
from cbir_pg.errors import NotFoundError

if TYPE_CHECKING:
    from cbir_pg.db.database import Database


def q(name: str, model: str | None = None):
    """A query of ``sql/queries/analysis.sql``, with the model's embedding table filled in."""
    if model is None:
        return queries.get("analysis", name)
    return queries.get("analysis", name, table=identifiers.embedding_table(model))


def check_model(conn, model: str) -> None:
    identifiers.check_key(model)
    if not scalar(conn, q("encoder_exists"), {"model": model}):
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


def split_ids(db: Database, model: str, split: str, datasets: Sequence[str] | None = None) -> SplitData:
    with db.connection() as conn:
        check_model(conn, model)
        rows = conn.execute(
            q("split_images", model), {"split": split, "datasets": _datasets(datasets), "vectors": False}
        ).fetchall()
    return SplitData(
        split,
        np.array([r["id"] for r in rows], dtype=np.int64),
        np.array([r["label_id"] for r in rows], dtype=np.int64),
    )


def load_split(db: Database, model: str, split: str, datasets: Sequence[str] | None = None) -> SplitData:
    """The labelled, non-excluded images of ``split`` with their vectors (float32)."""
    with db.connection() as conn:
        check_model(conn, model)
        cur = conn.cursor(binary=True)
        params = {"split": split, "datasets": _datasets(datasets), "vectors": True}
        cur.execute(q("split_images", model), params)
        ids, labels, vecs = [], [], []
        for r in cur:
            ids.append(r["id"])
            labels.append(r["label_id"])
            emb = r["embedding"]
            vecs.append(emb.to_numpy() if hasattr(emb, "to_numpy") else np.asarray(emb))
    X = np.vstack(vecs).astype(np.float32) if vecs else np.zeros((0, 0), dtype=np.float32)
    return SplitData(split, np.array(ids, dtype=np.int64), np.array(labels, dtype=np.int64), X)


def class_sizes(labels: Iterable[int]) -> dict[int, int]:
    u, c = np.unique(np.asarray(list(labels), dtype=np.int64), return_counts=True)
    return {int(a): int(b) for a, b in zip(u, c, strict=True)}
