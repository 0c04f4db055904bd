"""Pure retrieval metrics (no database): precision at N as the paper's code computes it, its micro and
macro averages, per-class means, and the ANN-versus-exact comparison.

Definitions (Denner et al., ``src/evaluation/evaluate_retrieval.py``):

* For a query of class ``c`` and a cut-off ``N``: ``n = min(N, |index images of class c|)`` and
  ``P@N = (relevant among the top n) / n``. A query whose class has no index image has ``n = 0``; its
  precision is undefined (NaN here) and it is left out of every average (the paper's code would divide
  by zero; its benchmark has no such query).
* micro: the mean over queries. macro: the mean over classes of each class's mean over its queries.

Ties in distance are ordered by the SQL runner (distance, then image id); these functions take the
ranked relevance as given.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

DEFAULT_NS: tuple[int, ...] = (1, 3, 5, 10)


def check_ns(ns: Sequence[int]) -> tuple[int, ...]:
    """Sorted, de-duplicated, positive cut-offs."""
    out = tuple(sorted({int(n) for n in ns}))
    if not out or out[0] < 1:
        raise ValueError(f"cut-offs must be positive integers, got {list(ns)!r}")
    return out


def precision_at_n(relevant: np.ndarray, class_index_sizes: np.ndarray, ns: Sequence[int]) -> np.ndarray:
    """Per-query precision, shape ``(q, len(ns))``; NaN where the query's class has no index image.

    ``relevant``: ``(q, maxN)`` booleans, rank order (padding beyond a short result is ``False``).
    ``class_index_sizes``: ``(q,)`` number of index images of each query's class.
    """
    rel = np.asarray(relevant, dtype=bool)
    sizes = np.asarray(class_index_sizes, dtype=np.int64)
    if rel.ndim != 2 or sizes.shape != (rel.shape[0],):
        raise ValueError(
            f"relevant must be (q, maxN) and class_index_sizes (q,), got {rel.shape} and {sizes.shape}"
        )
    ns = list(ns)
    if ns and max(ns) > rel.shape[1]:
        raise ValueError(f"cut-off {max(ns)} exceeds the {rel.shape[1]} ranked neighbours")
    if (sizes < 0).any():
        raise ValueError("class index sizes must be non-negative")
    hits = np.cumsum(rel, axis=1)  # hits[:, k-1] = relevant among the top k
    out = np.full((rel.shape[0], len(ns)), np.nan, dtype=np.float64)
    for j, n_cut in enumerate(ns):
        n_eff = np.minimum(n_cut, sizes)
        ok = n_eff > 0
        out[ok, j] = hits[ok, n_eff[ok] - 1] / n_eff[ok]
    return out


def micro(precisions: np.ndarray) -> np.ndarray:
    """Mean over the queries with a defined precision, per cut-off; NaN when there is none."""
    p = np.asarray(precisions, dtype=np.float64)
    out = np.full(p.shape[1], np.nan)
    for j in range(p.shape[1]):
        col = p[:, j]
        col = col[~np.isnan(col)]
        if len(col):
            out[j] = col.mean()
    return out


def class_means(precisions: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(classes, n_queries, means)``: each class's mean precision over its queries, ``(c, len(ns))``.

    A class whose queries all have undefined precision gets NaN."""
    p = np.asarray(precisions, dtype=np.float64)
    lab = np.asarray(labels)
    classes, inverse, n_queries = np.unique(lab, return_inverse=True, return_counts=True)
    means = np.full((len(classes), p.shape[1]), np.nan)
    for c in range(len(classes)):
        means[c] = micro(p[inverse == c])
    return classes, n_queries, means


def macro(precisions: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Mean over classes (with a defined class mean) of each class's mean over its queries."""
    _, _, means = class_means(precisions, labels)
    return micro(means) if len(means) else np.full(np.asarray(precisions).shape[1], np.nan)


@dataclass
class PrecisionSummary:
    ns: tuple[int, ...]
    per_query: np.ndarray  # (q, len(ns))
    micro: np.ndarray  # (len(ns),)
    macro: np.ndarray  # (len(ns),)
    classes: np.ndarray  # (c,)
    class_n_queries: np.ndarray  # (c,)
    class_means: np.ndarray  # (c, len(ns))
    n_undefined: int  # queries whose class has no index image

    def as_dict(self) -> dict[str, dict[str, float | None]]:
        """``{"P@1": {"micro": .., "macro": ..}, ...}``, JSON-friendly (NaN becomes None)."""
        return {
            f"P@{n}": {"micro": _num(self.micro[j]), "macro": _num(self.macro[j])}
            for j, n in enumerate(self.ns)
        }


def _num(x: float) -> float | None:
    return None if np.isnan(x) else float(x)


def summarise(
    relevant: np.ndarray, class_index_sizes: np.ndarray, labels: np.ndarray, ns: Sequence[int]
) -> PrecisionSummary:
    """Per-query P@N plus micro, macro and per-class means, all from the ranked relevance."""
    ns = check_ns(ns)
    per_query = precision_at_n(relevant, class_index_sizes, ns)
    classes, counts, means = class_means(per_query, labels)
    return PrecisionSummary(
        ns=ns,
        per_query=per_query,
        micro=micro(per_query),
        macro=micro(means) if len(means) else np.full(len(ns), np.nan),
        classes=classes,
        class_n_queries=counts,
        class_means=means,
        n_undefined=int(np.isnan(per_query[:, 0]).sum()) if len(ns) else 0,
    )


def recall_at_n(
    approx_ids: np.ndarray,
    approx_similarities: np.ndarray,
    exact_similarities: np.ndarray,
    exact_counts: np.ndarray,
    ns: Sequence[int],
    tol: float = 1e-6,
) -> np.ndarray:
    """Mean ANN recall of the top N against exact search, per cut-off.

    For a query, ``k = min(N, exact result length)`` and recall is the share of the ANN top k whose
    similarity is at least the exact k-th similarity minus ``tol`` (a tie-tolerant count, as in
    ann-benchmarks: an ANN result that swaps two equally distant images is not penalised). Queries with
    ``k = 0`` are left out. ``approx_ids`` marks padding with ``-1``.
    """
    ids = np.asarray(approx_ids)
    a_sim = np.asarray(approx_similarities, dtype=np.float64)
    e_sim = np.asarray(exact_similarities, dtype=np.float64)
    counts = np.asarray(exact_counts, dtype=np.int64)
    out = np.full(len(list(ns)), np.nan)
    for j, n_cut in enumerate(ns):
        k = np.minimum(n_cut, counts)
        ok = k > 0
        if not ok.any():
            continue
        rows = np.flatnonzero(ok)
        threshold = e_sim[rows, k[rows] - 1] - tol
        cols = np.arange(n_cut)[None, :]
        within = cols < k[rows, None]
        valid = (ids[rows, :n_cut] >= 0) & within
        good = valid & (np.nan_to_num(a_sim[rows, :n_cut], nan=-np.inf) >= threshold[:, None])
        out[j] = float(np.mean(good.sum(axis=1) / k[rows]))
    return out
