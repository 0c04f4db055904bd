"""Human relevance as ground truth: P@N where radiologists' judgements (``cbir.judgement``) replace the
label rule for the (query, neighbour) pairs they cover.

Relevance of a retrieved neighbour: the judgement when the pair was judged, else the label rule (same
harmonised label). Several users: each user's latest verdict counts once, and a pair is relevant when
more users said relevant than not relevant (a tie counts as not relevant). Judgements of uploads (pixel
hashes) are not benchmark queries and are not used. P@N is then the benchmark's own
(:func:`cbir_pg.eval.metrics.precision_at_n`, the same cut-off at the query's class size), over all
queries, and separately over the queries with at least one judged neighbour in their top N.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import psycopg

from cbir_pg.db import queries
from cbir_pg.eval import metrics


def load_judged(conn: psycopg.Connection) -> dict[tuple[int, int], bool]:
    """``{(query_image_id, neighbour_id): relevant}`` by majority over users (ties: not relevant).
    Run as a role that reads every row (the owner, or a member of ``cbir_judgement_reader``)."""
    from cbir_pg.db.database import dict_cursor

    return {
        (int(r["query_image_id"]), int(r["neighbour_id"])): int(r["n_relevant"]) > int(r["n_not_relevant"])
        for r in dict_cursor(conn).execute(queries.get("feedback", "judged_pairs"))
    }


def apply_judgements(
    query_ids: np.ndarray,
    neighbour_ids: np.ndarray,
    relevant: np.ndarray,
    judged: dict[tuple[int, int], bool],
) -> tuple[np.ndarray, np.ndarray]:
    """``relevant`` with each judged (query, neighbour) pair replaced by its verdict; returns it and the
    mask of judged positions. Padding (neighbour id ``-1``) is never judged."""
    rel = np.array(relevant, dtype=bool, copy=True)
    mask = np.zeros_like(rel)
    if not judged:
        return rel, mask
    for i, q in enumerate(np.asarray(query_ids).tolist()):
        for j, n in enumerate(np.asarray(neighbour_ids[i]).tolist()):
            v = judged.get((q, n))
            if v is not None and n >= 0:
                rel[i, j] = v
                mask[i, j] = True
    return rel, mask


@dataclass(frozen=True)
class JudgedPrecision:
    ns: tuple[int, ...]
    micro: np.ndarray  # P@N over all queries (judgements where they exist, labels elsewhere)
    judged_micro: np.ndarray  # P@N over the judged queries only (NaN when there is none)
    label_micro: np.ndarray  # P@N of the same rankings by the label rule alone
    n_queries: int
    n_judged_queries: int  # queries with at least one judged neighbour in their top max(N)
    n_judged_pairs: int  # judged (query, neighbour) positions in the top max(N)
    n_disagreements: int  # of those, verdicts that differ from the label rule


def judged_precision(
    query_ids: np.ndarray,
    neighbour_ids: np.ndarray,
    relevant: np.ndarray,
    class_index_sizes: np.ndarray,
    judged: dict[tuple[int, int], bool],
    ns: Sequence[int],
) -> JudgedPrecision:
    ns = metrics.check_ns(ns)
    rel, mask = apply_judgements(query_ids, neighbour_ids, relevant, judged)
    per = metrics.precision_at_n(rel, class_index_sizes, ns)
    per_label = metrics.precision_at_n(relevant, class_index_sizes, ns)
    has = mask.any(axis=1)
    judged_micro = metrics.micro(per[has]) if has.any() else np.full(len(ns), np.nan)
    return JudgedPrecision(
        ns=ns,
        micro=metrics.micro(per),
        judged_micro=judged_micro,
        label_micro=metrics.micro(per_label),
        n_queries=len(query_ids),
        n_judged_queries=int(has.sum()),
        n_judged_pairs=int(mask.sum()),
        n_disagreements=int((mask & (rel != np.asarray(relevant, bool))).sum()),
    )
