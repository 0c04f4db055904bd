"""Is run A better than run B? Paired confidence intervals for the difference in P@N
(``cbir-pg eval compare RUN_A RUN_B``).

Both runs must hold the **same queries** (the same query image ids; otherwise :class:`ConfigError`):
the comparison is then paired, query by query, which is far more sensitive than two separate intervals.
Per query, ``P@N`` is the stored ranking's precision as defined in :mod:`cbir_pg.eval.metrics` (the
paper's ``n = min(N, class index size)``); a query whose precision is undefined in either run is left
out of both. ``d_q = P_A(q) - P_B(q)``.

* **Difference**: micro ``mean_q d_q``; macro ``mean_c mean_{q in c} d_q`` (classes are the query
  labels), i.e. exactly ``micro(A) - micro(B)`` and ``macro(A) - macro(B)``.
* **Confidence interval** (percentile bootstrap, Efron & Tibshirani 1993, ch. 13; paired: one resample
  of queries serves both runs): queries are resampled with replacement **within their class** (a
  stratified bootstrap: every class keeps its number of queries, so the macro average stays defined and
  the class mix stays the benchmark's). For resample ``b``: classes in ascending label order, for each
  class of ``n_c`` queries ``B`` rows ``idx_b = rng.integers(0, n_c, size=n_c)`` from one
  ``numpy.random.default_rng(seed)``, drawn class after class (in chunks of rows, the same stream); micro ``= sum_c sum(d_c[idx_b]) / q``, macro
  ``= mean_c mean(d_c[idx_b])``. The interval is the ``(1-level)/2`` and ``(1+level)/2`` quantiles
  (``numpy.quantile``, linear) of the ``B`` resampled differences.
* **Paired test** (approximate randomisation, Noreen 1989; the sign-flip test for paired data): under
  "A and B are exchangeable per query" each ``d_q`` keeps or flips its sign with probability 1/2;
  ``p = (1 + #{|D*| >= |D|}) / (1 + R)`` over ``R`` random sign patterns, for micro and macro ``D``
  separately, two-sided. Sign patterns come from a second generator, ``default_rng(seed + 1)``, as
  ``R`` rows of ``rng.integers(0, 2, size=q)`` drawn in chunks of ``CHUNK`` rows.

A difference whose interval contains 0 is not established at that level.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cbir_pg.errors import ConfigError
from cbir_pg.eval import metrics

CHUNK = 256


@dataclass(frozen=True)
class Difference:
    """One average at one cut-off: both runs' values, ``diff = a - b``, its interval and p-value."""

    n: int
    average: str  # micro | macro
    a: float
    b: float
    diff: float
    low: float
    high: float
    p_value: float

    @property
    def established(self) -> bool:
        """The interval excludes 0."""
        return self.low > 0 or self.high < 0

    def phrase(self, digits: int = 4) -> str:
        """``+0.0052 [-0.0039, +0.0142]``: the difference with its interval."""
        f = f"{{:+.{digits}f}}"
        return f"{f.format(self.diff)} [{f.format(self.low)}, {f.format(self.high)}]"


@dataclass
class PairedComparison:
    run_a: int | None
    run_b: int | None
    ns: tuple[int, ...]
    n_queries: int
    n_left_out: int
    n_classes: int
    level: float
    resamples: int
    permutations: int
    seed: int
    differences: list[Difference]

    def get(self, n: int, average: str) -> Difference:
        for d in self.differences:
            if d.n == n and d.average == average:
                return d
        raise KeyError((n, average))


def _align(ids_a, ids_b, *arrays_b):
    """Reorder run B's arrays to run A's query order; refuse different query sets."""
    ids_a, ids_b = np.asarray(ids_a), np.asarray(ids_b)
    if len(ids_a) != len(set(ids_a.tolist())) or len(ids_b) != len(set(ids_b.tolist())):
        raise ConfigError("a run lists the same query twice")
    sa, sb = set(ids_a.tolist()), set(ids_b.tolist())
    if sa != sb:
        only_a, only_b = len(sa - sb), len(sb - sa)
        raise ConfigError(
            f"the runs hold different queries ({only_a} only in A, {only_b} only in B; "
            f"{len(sa & sb)} shared): a paired comparison needs the same query set"
        )
    pos = {q: i for i, q in enumerate(ids_b.tolist())}
    order = np.array([pos[q] for q in ids_a.tolist()], dtype=np.int64)
    return [np.asarray(x)[order] for x in arrays_b]


def paired_difference(
    prec_a: np.ndarray,
    prec_b: np.ndarray,
    labels: np.ndarray,
    ns: Sequence[int],
    *,
    level: float = 0.95,
    resamples: int = 2000,
    permutations: int = 2000,
    seed: int = 0,
) -> tuple[list[Difference], int, int]:
    """The differences, intervals and p-values from per-query precisions ``(q, len(ns))`` of both runs
    (same query order) and the query labels. Returns ``(differences, queries used, queries left out)``."""
    pa, pb = np.asarray(prec_a, dtype=np.float64), np.asarray(prec_b, dtype=np.float64)
    lab = np.asarray(labels)
    if pa.shape != pb.shape or pa.shape[0] != lab.shape[0] or pa.shape[1] != len(ns):
        raise ValueError("precisions must both be (q, len(ns)) and labels (q,)")
    if not 0 < level < 1:
        raise ConfigError(f"confidence level must lie between 0 and 1, got {level}")
    if resamples < 1 or permutations < 1:
        raise ConfigError("resamples and permutations must be positive")
    keep = ~(np.isnan(pa).any(axis=1) | np.isnan(pb).any(axis=1))
    pa, pb, lab = pa[keep], pb[keep], lab[keep]
    if pa.shape[0] == 0:
        raise ConfigError("no query has a defined precision in both runs")
    d = pa - pb
    members = [np.flatnonzero(lab == c) for c in np.unique(lab)]
    boot_micro, boot_macro = _bootstrap(d, members, resamples, seed)
    obs_micro, obs_macro, ge_micro, ge_macro = _sign_flip(d, members, permutations, seed + 1)
    lo_q, hi_q = (1 - level) / 2, (1 + level) / 2
    a_macro = np.array([pa[m].mean(axis=0) for m in members]).mean(axis=0)
    b_macro = np.array([pb[m].mean(axis=0) for m in members]).mean(axis=0)
    out: list[Difference] = []
    for avg, a, b, obs, boot, ge in (
        ("micro", pa.mean(axis=0), pb.mean(axis=0), obs_micro, boot_micro, ge_micro),
        ("macro", a_macro, b_macro, obs_macro, boot_macro, ge_macro),
    ):
        for j, n in enumerate(ns):
            out.append(
                Difference(
                    n=int(n),
                    average=avg,
                    a=float(a[j]),
                    b=float(b[j]),
                    diff=float(obs[j]),
                    low=float(np.quantile(boot[:, j], lo_q)),
                    high=float(np.quantile(boot[:, j], hi_q)),
                    p_value=float((1 + ge[j]) / (1 + permutations)),
                )
            )
    return out, d.shape[0], int((~keep).sum())


def _bootstrap(
    d: np.ndarray, members: list[np.ndarray], resamples: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Stratified paired bootstrap: ``resamples`` draws of the differences ``d`` within each class
    (``members``: the rows of each class); the micro and macro mean of each draw, ``(B, len(ns))``."""
    rng = np.random.default_rng(seed)
    sums = np.zeros((len(members), resamples, d.shape[1]))
    for ci, idx in enumerate(members):
        dc = d[idx]
        for start in range(0, resamples, CHUNK):  # rows of one (B, n_c) draw, in chunks to bound memory
            r = min(CHUNK, resamples - start)
            draw = rng.integers(0, len(idx), size=(r, len(idx)))
            sums[ci, start : start + r] = dc[draw].sum(axis=1)
    sizes = np.array([len(m) for m in members], dtype=np.float64)
    return sums.sum(axis=0) / d.shape[0], (sums / sizes[:, None, None]).mean(axis=0)


def _sign_flip(
    d: np.ndarray, members: list[np.ndarray], permutations: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Paired sign-flip test: the observed micro and macro mean differences and, per N, how many of
    ``permutations`` random sign flips reach them in absolute value (micro, macro)."""
    q = d.shape[0]
    onehot = np.zeros((q, len(members)))
    for ci, idx in enumerate(members):
        onehot[idx, ci] = 1.0 / len(idx)
    obs_micro = d.mean(axis=0)
    obs_macro = (onehot.T @ d).mean(axis=0)
    prng = np.random.default_rng(seed)
    ge_micro = np.zeros(d.shape[1])
    ge_macro = np.zeros(d.shape[1])
    done = 0
    while done < permutations:
        r = min(CHUNK, permutations - done)
        signs = prng.integers(0, 2, size=(r, q)) * 2.0 - 1.0
        flipped = signs[:, :, None] * d[None, :, :]  # (r, q, len(ns))
        mi = flipped.mean(axis=1)
        ma = np.einsum("qc,rqn->rcn", onehot, flipped).mean(axis=1)
        ge_micro += (np.abs(mi) >= np.abs(obs_micro) - 1e-12).sum(axis=0)
        ge_macro += (np.abs(ma) >= np.abs(obs_macro) - 1e-12).sum(axis=0)
        done += r
    return obs_micro, obs_macro, ge_micro, ge_macro


def compare_runs(
    db,
    run_a: int,
    run_b: int,
    *,
    ns: Sequence[int] = metrics.DEFAULT_NS,
    level: float = 0.95,
    resamples: int = 2000,
    permutations: int = 2000,
    seed: int = 0,
) -> PairedComparison:
    """Paired comparison of two stored retrieval runs (see the module docstring)."""
    from cbir_pg.eval.runs import load_queries

    ns = metrics.check_ns(ns)
    qa, qb = load_queries(db, run_a), load_queries(db, run_b)
    for run, sq in ((run_a, qa), (run_b, qb)):
        if len(sq.query_ids) == 0:
            raise ConfigError(f"run {run} has no stored queries (not a retrieval run, or it does not exist)")
        if sq.relevant.shape[1] < max(ns):
            raise ConfigError(f"run {run} stored {sq.relevant.shape[1]} neighbours, fewer than N = {max(ns)}")
    rel_b, sizes_b, labels_b = _align(
        qa.query_ids, qb.query_ids, qb.relevant, qb.class_index_sizes, qb.labels
    )
    if not np.array_equal(labels_b, qa.labels):
        raise ConfigError("the runs label the same queries differently (a relabelled dataset between them)")
    pa = metrics.precision_at_n(qa.relevant, qa.class_index_sizes, ns)
    pb = metrics.precision_at_n(rel_b, sizes_b, ns)
    diffs, used, left = paired_difference(
        pa, pb, qa.labels, ns, level=level, resamples=resamples, permutations=permutations, seed=seed
    )
    return PairedComparison(
        run_a=run_a,
        run_b=run_b,
        ns=ns,
        n_queries=used,
        n_left_out=left,
        n_classes=len(np.unique(qa.labels)),
        level=level,
        resamples=resamples,
        permutations=permutations,
        seed=seed,
        differences=diffs,
    )
