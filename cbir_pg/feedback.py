"""Radiologists teach the search: relevance judgements and Rocchio refinement.

A judgement is a row of ``cbir.judgement`` (revision 0009): the acting database role (``current_user``),
the query (a stored image id, or an upload's pixel hash), the neighbour, the model that showed it, the
verdict (``relevant`` / ``not_relevant``) and an optional free-text reason. Row-level security keeps each
user to their own rows (members of ``cbir_judgement_reader`` and the owner read all); BI readers see the
de-identified ``cbir_report.judgements``. One verdict per (user, query, neighbour, model): judging again
replaces it.

Refinement is ``cbir.similar_images_rocchio`` (``sql/schema/27_feedback.sql``): the query vector moved
toward the user's relevant and away from their not-relevant neighbours, searched again.
:func:`rocchio_reference` is the same arithmetic in NumPy, and :func:`moves` says which cases moved.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import psycopg

from cbir_pg.db import queries
from cbir_pg.errors import ConfigError

VERDICTS = ("relevant", "not_relevant")
MAX_REASON = 2000
#: Rocchio's classic weights (Salton & Buckley 1990): the query, the relevant mean, the not-relevant mean
ALPHA, BETA, GAMMA = 1.0, 0.75, 0.15


@dataclass(frozen=True)
class Judgement:
    """A verdict to record; exactly one of ``query_image_id`` and ``query_hash``."""

    neighbour_id: int
    model: str
    verdict: str
    query_image_id: int | None = None
    query_hash: str | None = None
    reason: str | None = None

    def __post_init__(self) -> None:
        import re

        from cbir_pg.db import identifiers

        if (self.query_image_id is None) == (self.query_hash is None):
            raise ConfigError("a judgement needs exactly one of a query image id and an upload's pixel hash")
        if self.query_hash is not None and not re.fullmatch(r"[0-9a-f]{64}", self.query_hash):
            raise ConfigError("the query hash must be 64 lowercase hex digits (sha256 of the pixels)")
        for name in ("neighbour_id", "query_image_id"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or not 1 <= v <= 2**63 - 1):
                raise ConfigError(f"{name.replace('_', ' ')} must be a positive integer, got {v!r}")
        if self.verdict not in VERDICTS:
            raise ConfigError(f"verdict must be relevant or not_relevant, got {self.verdict!r}")
        identifiers.check_key(self.model)
        if self.reason is not None and len(self.reason) > MAX_REASON:
            raise ConfigError(f"the reason is longer than {MAX_REASON} characters")

    def params(self) -> dict[str, Any]:
        reason = self.reason.strip() if self.reason else None
        return {
            "query_image_id": self.query_image_id,
            "query_hash": self.query_hash,
            "neighbour_id": self.neighbour_id,
            "model": self.model,
            "verdict": self.verdict,
            "reason": reason or None,
        }


def record(conn: psycopg.Connection, j: Judgement) -> dict[str, Any]:
    """Insert or replace the acting user's verdict; returns the stored row (by name)."""
    from cbir_pg.db.database import dict_cursor

    return dict(dict_cursor(conn).execute(queries.get("feedback", "upsert_judgement"), j.params()).fetchone())


def withdraw(conn: psycopg.Connection, j: Judgement) -> int:
    """Delete the acting user's verdict on this (query, neighbour, model); returns rows deleted."""
    return conn.execute(queries.get("feedback", "delete_judgement"), j.params()).rowcount


def my_judgements(
    conn: psycopg.Connection, *, query_image_id: int | None = None, query_hash: str | None = None
) -> list[dict[str, Any]]:
    from cbir_pg.db.database import dict_cursor

    return [
        dict(r)
        for r in dict_cursor(conn).execute(
            queries.get("feedback", "my_judgements"),
            {"query_image_id": query_image_id, "query_hash": query_hash},
        )
    ]


def check_weights(alpha: float, beta: float, gamma: float) -> None:
    for name, v in (("alpha", alpha), ("beta", beta), ("gamma", gamma)):
        if not (isinstance(v, int | float) and 0 <= v <= 100):
            raise ConfigError(f"Rocchio {name} must be between 0 and 100, got {v!r}")


def rocchio_reference(
    query: np.ndarray,
    relevant: np.ndarray,
    not_relevant: np.ndarray,
    alpha: float = ALPHA,
    beta: float = BETA,
    gamma: float = GAMMA,
) -> np.ndarray:
    """Rocchio (1971) on unit vectors, the arithmetic of ``cbir.rocchio_vector``:
    ``alpha q/|q| + beta mean_r v_r/|v_r| - gamma mean_n v_n/|v_n|``; an empty set adds nothing."""

    def unit(a: np.ndarray) -> np.ndarray:
        a = np.atleast_2d(np.asarray(a, np.float64))
        return a / np.linalg.norm(a, axis=1, keepdims=True)

    out = alpha * unit(query)[0]
    if len(relevant):
        out = out + beta * unit(relevant).mean(0)
    if len(not_relevant):
        out = out - gamma * unit(not_relevant).mean(0)
    return out


@dataclass(frozen=True)
class Move:
    image_id: int
    before: int | None  # rank before refining (None: not in the first list)
    after: int | None  # rank after (None: dropped out)

    @property
    def change(self) -> str:
        if self.before is None:
            return "new"
        if self.after is None:
            return "dropped"
        if self.after < self.before:
            return "up"
        return "down" if self.after > self.before else "same"


def moves(before: list[int], after: list[int]) -> list[Move]:
    """How each case moved between two rankings (image ids, best first): those of ``after`` in its order,
    then those that dropped out."""
    rb = {i: r for r, i in enumerate(before, start=1)}
    ra = {i: r for r, i in enumerate(after, start=1)}
    out = [Move(i, rb.get(i), ra[i]) for i in after]
    return out + [Move(i, rb[i], None) for i in before if i not in ra]


def refine(
    conn: psycopg.Connection,
    image_id: int,
    model: str,
    k: int = 10,
    *,
    split: str | None = None,
    dataset: str | None = None,
    modality: str | None = None,
    exclude_same_patient: bool = False,
    alpha: float = ALPHA,
    beta: float = BETA,
    gamma: float = GAMMA,
) -> list[dict[str, Any]]:
    """The top ``k`` after Rocchio with the acting user's judgements of this query (SQL)."""
    from cbir_pg.db.database import dict_cursor

    check_weights(alpha, beta, gamma)
    return [
        dict(r)
        for r in dict_cursor(conn).execute(
            queries.get("feedback", "similar_images_rocchio"),
            {
                "image_id": image_id,
                "model": model,
                "k": k,
                "split": split,
                "dataset": dataset,
                "modality": modality,
                "exclude_same_patient": exclude_same_patient,
                "alpha": alpha,
                "beta": beta,
                "gamma": gamma,
            },
        )
    ]
