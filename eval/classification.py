"""Pure classification metrics and kNN scoring for Table 4 of the paper (no database, no printing).

Definitions (single-label, multi-class; ``C`` classes, one-vs-rest where a binary metric is needed):

* **F1**: micro F1 (for single-label data this equals accuracy) and macro F1 (unweighted mean of the
  per-class F1 over the classes that occur in the true or the predicted labels, as scikit-learn).
* **AUPRC**: *average precision*, ``AP = sum_n (R_n - R_{n-1}) P_n`` over the distinct score
  thresholds (scikit-learn's ``average_precision_score``; no interpolation). Micro: one binary problem
  from all ``(image, class)`` pairs. Macro: mean of the one-vs-rest AP over the classes with at least one
  positive. This is *not* ROC-AUC, which the paper's published code reported under the name AUPRC.
* **AUROC**: trapezoidal area under the ROC curve, micro and macro as for AUPRC; macro skips classes
  whose column has no positive or no negative (the AUROC is undefined there).

kNN class scores are the fractions of the ``k`` nearest neighbours that carry each class (vote
fractions), optionally weighted by the cosine similarity of each neighbour. The predicted class is the
one with most votes; a tie goes to the tied class whose first neighbour is nearest.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

METRIC_NAMES = ("f1", "auprc", "auroc")
AVERAGES = ("micro", "macro")


# --------------------------------------------------------------------------- binary metrics
# scikit-learn computes them; these wrappers only fix the undefined cases to ``nan`` (no warning).
def average_precision(y_true: np.ndarray, score: np.ndarray) -> float:
    """Average precision of one binary problem (``sklearn.metrics.average_precision_score``); ``nan``
    when there is no positive."""
    from sklearn.metrics import average_precision_score

    y = np.asarray(y_true).astype(bool).ravel()
    s = np.asarray(score, dtype=np.float64).ravel()
    if y.size == 0 or not y.any():
        return float("nan")
    return float(average_precision_score(y, s))


def roc_auc(y_true: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve of one binary problem (``sklearn.metrics.roc_auc_score``); ``nan``
    without both classes."""
    from sklearn.metrics import roc_auc_score

    y = np.asarray(y_true).astype(bool).ravel()
    s = np.asarray(score, dtype=np.float64).ravel()
    if y.size == 0 or y.all() or not y.any():
        return float("nan")
    return float(roc_auc_score(y, s))


# --------------------------------------------------------------------------- multi-class
def one_hot(y: np.ndarray, classes: Sequence[int]) -> np.ndarray:
    """``(n, C)`` boolean indicator of ``y`` against ``classes``."""
    return np.asarray(y).reshape(-1, 1) == np.asarray(classes).reshape(1, -1)


def f1_scores(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[float, float, dict[int, float]]:
    """``(micro, macro, per_class)`` F1 over the classes occurring in ``y_true`` or ``y_pred``
    (``sklearn.metrics.f1_score``; a class never predicted nor true scores 0)."""
    from sklearn.metrics import f1_score

    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    if y_true.size == 0:
        return float("nan"), float("nan"), {}
    labels = np.union1d(y_true, y_pred)
    per_values = f1_score(y_true, y_pred, labels=labels, average=None, zero_division=0)
    per = {int(c): float(v) for c, v in zip(labels, per_values, strict=True)}
    micro = float(f1_score(y_true, y_pred, labels=labels, average="micro", zero_division=0))
    return micro, float(np.mean(per_values)), per


def ovr_metric(
    fn, y_true: np.ndarray, scores: np.ndarray, classes: Sequence[int]
) -> tuple[float, float, dict[int, float]]:
    """``(micro, macro, per_class)`` of a binary metric ``fn`` applied one-vs-rest; macro ignores nan."""
    y = one_hot(y_true, classes)
    scores = np.asarray(scores, dtype=np.float64)
    if y.size == 0:
        return float("nan"), float("nan"), {}
    micro = fn(y.ravel(), scores.ravel())
    per = {int(c): fn(y[:, j], scores[:, j]) for j, c in enumerate(classes)}
    defined = [v for v in per.values() if not np.isnan(v)]
    macro = float(np.mean(defined)) if defined else float("nan")
    return float(micro), macro, per


@dataclass(frozen=True)
class ClassificationMetrics:
    """Micro and macro F1, AUPRC (average precision) and AUROC, plus per-class values."""

    f1_micro: float
    f1_macro: float
    auprc_micro: float
    auprc_macro: float
    auroc_micro: float
    auroc_macro: float
    n: int
    per_class: dict[str, dict[int, float]] = field(default_factory=dict)

    def as_rows(self) -> list[tuple[str, str, float]]:
        """``(metric, average, value)`` rows for ``cbir.eval_metric``."""
        return [(m, a, getattr(self, f"{m}_{a}")) for m in METRIC_NAMES for a in AVERAGES]

    def as_dict(self) -> dict[str, float]:
        return {f"{m}_{a}": v for m, a, v in self.as_rows()}


def classification_metrics(
    y_true: np.ndarray, y_pred: np.ndarray, scores: np.ndarray, classes: Sequence[int]
) -> ClassificationMetrics:
    """All Table-4 metrics from true labels, predicted labels and a ``(n, C)`` score matrix whose
    columns follow ``classes``."""
    y_true = np.asarray(y_true)
    scores = np.asarray(scores, dtype=np.float64)
    if scores.shape != (y_true.size, len(classes)):
        raise ValueError(f"scores must have shape ({y_true.size}, {len(classes)}), got {scores.shape}")
    f1_mi, f1_ma, f1_per = f1_scores(y_true, y_pred)
    ap_mi, ap_ma, ap_per = ovr_metric(average_precision, y_true, scores, classes)
    auc_mi, auc_ma, auc_per = ovr_metric(roc_auc, y_true, scores, classes)
    return ClassificationMetrics(
        f1_mi,
        f1_ma,
        ap_mi,
        ap_ma,
        auc_mi,
        auc_ma,
        int(y_true.size),
        per_class={"f1": f1_per, "auprc": ap_per, "auroc": auc_per},
    )


# --------------------------------------------------------------------------- kNN
def _columns(values: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Column index of each value in ``classes``, ``-1`` where it is not one of them."""
    values = np.asarray(values)
    if classes.size == 0:
        return np.full(values.shape, -1, dtype=np.int64)
    order = np.argsort(classes, kind="mergesort")
    pos = np.clip(np.searchsorted(classes, values, sorter=order), 0, classes.size - 1)
    col = order[pos]
    return np.where(classes[col] == values, col, -1).astype(np.int64)


class KnnScorer:
    """Class scores for every ``k`` from one list of ``K`` neighbours per query.

    ``neighbour_labels`` is ``(q, K)``, nearest first; ``-1`` (or any label outside ``classes``) marks a
    missing neighbour. Calling :meth:`at` for increasing ``k`` is cheap: votes are accumulated.
    """

    def __init__(
        self,
        neighbour_labels: np.ndarray,
        classes: Sequence[int],
        similarities: np.ndarray | None = None,
        weighted: bool = False,
    ) -> None:
        labels = np.asarray(neighbour_labels)
        if labels.ndim != 2:
            raise ValueError("neighbour_labels must be a (queries, K) array")
        self.classes = np.asarray(classes)
        self.K = labels.shape[1]
        # column index of each neighbour's class, -1 when it is not one of ``classes``
        self._col = _columns(labels, self.classes)
        if weighted:
            if similarities is None:
                raise ValueError("weighted kNN needs the similarities")
            w = np.clip(np.asarray(similarities, dtype=np.float64), 0.0, None)
        else:
            w = np.ones(labels.shape, dtype=np.float64)
        self._w = np.where(self._col >= 0, w, 0.0)
        q, c = labels.shape[0], len(self.classes)
        # rank of the first (nearest) neighbour of each class, for tie-breaking
        first = np.full((q, c), np.iinfo(np.int64).max, dtype=np.int64)
        for r in range(self.K - 1, -1, -1):
            rows = np.flatnonzero(self._col[:, r] >= 0)
            first[rows, self._col[rows, r]] = r
        self._first = first
        self._votes = np.zeros((q, c), dtype=np.float64)
        self._k = 0

    def at(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``(predicted labels (q,), vote-fraction scores (q, C))`` for the ``k`` nearest neighbours."""
        if not 1 <= k <= self.K:
            raise ValueError(f"k must be in 1..{self.K}, got {k}")
        if k < self._k:
            self._votes[:] = 0.0
            self._k = 0
        q = self._votes.shape[0]
        for r in range(self._k, k):
            rows = np.flatnonzero(self._col[:, r] >= 0)
            np.add.at(self._votes, (rows, self._col[rows, r]), self._w[rows, r])
        self._k = k
        votes = self._votes
        total = votes.sum(axis=1, keepdims=True)
        scores = np.divide(votes, total, out=np.zeros_like(votes), where=total > 0)
        top = votes.max(axis=1, keepdims=True)
        tied_first = np.where(votes == top, self._first, np.iinfo(np.int64).max)
        pred = self.classes[np.argmin(tied_first, axis=1)] if q else self.classes[:0]
        return pred, scores


@dataclass(frozen=True)
class KSelection:
    """The chosen ``k`` and the validation micro F1 of every ``k`` tried."""

    best_k: int
    best_score: float
    scores: dict[int, float]


def select_k(
    y_val: np.ndarray,
    neighbour_labels: np.ndarray,
    classes: Sequence[int],
    k_range: Iterable[int] = range(1, 100),
    similarities: np.ndarray | None = None,
    weighted: bool = False,
) -> KSelection:
    """Pick ``k`` by micro F1 on the validation queries; ties go to the smallest ``k``.

    ``k`` values above the number of neighbours available are skipped. The returned ``best_k`` is the
    ``k`` that scored best, to be used as is on the test split (the paper's code was off by one here).
    """
    scorer = KnnScorer(neighbour_labels, classes, similarities, weighted)
    ks = sorted({int(k) for k in k_range if 1 <= int(k) <= scorer.K})
    if not ks:
        raise ValueError(f"no k in the range fits the {scorer.K} neighbours available")
    y_val = np.asarray(y_val)
    scores: dict[int, float] = {}
    for k in ks:
        pred, _ = scorer.at(k)
        scores[k] = float(np.mean(pred == y_val)) if y_val.size else float("nan")
    best_k = ks[0]
    for k in ks:
        if scores[k] > scores[best_k]:
            best_k = k
    return KSelection(best_k, scores[best_k], scores)


def knn_metrics(
    y_true: np.ndarray,
    neighbour_labels: np.ndarray,
    classes: Sequence[int],
    k: int,
    similarities: np.ndarray | None = None,
    weighted: bool = False,
) -> ClassificationMetrics:
    """Table-4 metrics of a kNN classifier with ``k`` neighbours."""
    pred, scores = KnnScorer(neighbour_labels, classes, similarities, weighted).at(k)
    return classification_metrics(y_true, pred, scores, classes)


def precision_at_1_per_class(y_true: np.ndarray, first_labels: np.ndarray) -> dict[int, tuple[int, float]]:
    """``{class: (n_queries, P@1)}`` from each query's nearest neighbour label."""
    y_true = np.asarray(y_true)
    hit = y_true == np.asarray(first_labels)
    return {int(c): (int(np.sum(y_true == c)), float(np.mean(hit[y_true == c]))) for c in np.unique(y_true)}
