"""kNN classification from the stored embeddings and the index (Table 4 of the paper).

One SQL top-``K`` query per query image (``K`` = the largest ``k`` tried), through
:func:`cbir_pg.eval.topn.topn`, for the validation and the test queries. Every ``k`` is then evaluated in
Python from those same neighbour lists: ``k`` is chosen by micro F1 on validation (ties: smallest
``k``) and the test metrics are reported with exactly that ``k``. The number of neighbours is never
capped by the query's true class size (that would leak the label).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cbir_pg.db.database import Database
from cbir_pg.eval.classification import (
    ClassificationMetrics,
    KnnScorer,
    KSelection,
    classification_metrics,
    select_k,
)


@dataclass
class KnnResult:
    """A kNN evaluation: the chosen ``k``, its validation curve, the test metrics, the stored run id."""

    model: str
    run_id: int | None
    k: int
    selection: KSelection
    test: ClassificationMetrics
    val: ClassificationMetrics
    classes: list[int]
    n_val: int
    n_test: int
    n_index: int
    mode: str
    weighted: bool
    p_at_1: dict[int, tuple[int, float]]  # class -> (test queries, P@1)
    index_class_sizes: dict[int, int]
    params: dict
    seconds: float


@dataclass
class _Searched:
    """The validation and test queries (validation first) and their top K neighbours."""

    val: Any  # data.SplitData
    test: Any
    res: Any  # topn.TopN
    ks: list[int]
    all_embedded: bool

    @property
    def nv(self) -> int:
        return int(self.val.ids.size)

    @property
    def k_avail(self) -> int:
        return int(min(self.ks[-1], self.res.n_index))

    def neighbours(self, part: slice) -> tuple[np.ndarray, np.ndarray]:
        """Neighbour labels and similarities of the validation (``[:nv]``) or test (``[nv:]``) rows."""
        return self.res.neighbour_labels[part, : self.k_avail], self.res.similarities[part, : self.k_avail]


def _search(
    db: Database, model: str, ks: list[int], splits: dict[str, Any], **topn_options: Any
) -> _Searched:
    """The labelled validation and test images and one top-``max(ks)`` search for all of them."""
    from cbir_pg.errors import NotFoundError
    from cbir_pg.eval import data, scope
    from cbir_pg.eval.topn import IndexFilter, topn

    index_splits, datasets = splits["index_splits"], splits["datasets"]
    all_embedded = scope.check(
        db, model, datasets, (*index_splits, splits["val_split"], splits["test_split"])
    )
    val = data.split_ids(db, model, splits["val_split"], datasets)
    test = data.split_ids(db, model, splits["test_split"], datasets)
    if test.ids.size == 0:
        raise NotFoundError(f"no labelled {splits['test_split']!r} images with {model!r} embeddings")
    if val.ids.size == 0:
        raise NotFoundError(
            f"no labelled {splits['val_split']!r} images with {model!r} embeddings to choose k on"
        )
    flt = IndexFilter(splits=tuple(index_splits), datasets=tuple(datasets) if datasets else None)
    res = topn(db, model, query_ids=np.r_[val.ids, test.ids], index_filter=flt, n=ks[-1], **topn_options)
    if res.n_index == 0:
        raise NotFoundError(f"the index ({', '.join(index_splits)}) holds no {model!r} embeddings")
    return _Searched(val, test, res, ks, all_embedded)


@dataclass
class _Scored:
    """``k`` chosen on validation, the metrics at that ``k`` and the test queries' P@1 per class."""

    classes: list[int]
    selection: KSelection
    test: ClassificationMetrics
    val: ClassificationMetrics
    p1: dict[int, tuple[int, float]]
    p1_overall: float


def _score(s: _Searched, weighted: bool) -> _Scored:
    """Choose ``k`` by validation micro F1, then evaluate validation and test at that ``k``."""
    res, nv = s.res, s.nv
    classes = sorted(
        {c for c in res.index_class_sizes if c >= 0}
        | set(s.val.labels.tolist())
        | set(s.test.labels.tolist())
    )
    val_labels, val_sims = s.neighbours(slice(None, nv))
    sel = select_k(s.val.labels, val_labels, classes, s.ks, val_sims, weighted)

    def at_k(labels, part: slice) -> ClassificationMetrics:
        neighbour_labels, sims = s.neighbours(part)
        pred, scores = KnnScorer(neighbour_labels, classes, sims, weighted).at(sel.best_k)
        return classification_metrics(labels, pred, scores, classes)

    labels, first = s.test.labels, res.neighbour_labels[nv:, 0]
    p1 = {
        int(c): (int(np.sum(labels == c)), float(np.mean(first[labels == c] == c))) for c in np.unique(labels)
    }
    test_m, val_m = at_k(labels, slice(nv, None)), at_k(s.val.labels, slice(None, nv))
    return _Scored(classes, sel, test_m, val_m, p1, float(np.mean(first == labels)))


def _store(
    db: Database, model: str, mode: str, s: _Searched, sc: _Scored, params: dict, seconds: float
) -> int:
    """The run (kind ``knn``): test metrics at the chosen ``k``, the validation curve and P@1."""
    from cbir_pg.eval import data, runs
    from cbir_pg.eval.runs import ClassMetric, Metric

    k, sizes = sc.selection.best_k, _class_sizes(s.res)
    curve = [Metric("val_f1", kk, "micro", v) for kk, v in sc.selection.scores.items()]
    p1_rows = [ClassMetric(c, "p_at_1", 1, n, sizes.get(c, 0), v) for c, (n, v) in sc.p1.items()]
    return runs.store_classification_run(
        db,
        "knn",
        model,
        mode=mode,
        params=params,
        test=sc.test,
        val=sc.val,
        at=k,
        seed=0,
        n_queries=int(s.test.ids.size),
        n_index=int(s.res.n_index),
        seconds=seconds,
        class_sizes=sizes,
        test_class_counts=data.class_sizes(s.test.labels),
        extra_metrics={"k": k, "val_f1_micro": sc.selection.best_score, "p_at_1": sc.p1_overall},
        extra_metric_rows=[*curve, Metric("p_at_1", 1, "micro", sc.p1_overall)],
        extra_class_rows=p1_rows,
        all_embedded=s.all_embedded,
    )


def _class_sizes(res: Any) -> dict[int, int]:
    return {int(c): int(n) for c, n in res.index_class_sizes.items() if c >= 0}


def _params(ks: list[int], k: int, splits: dict[str, Any], res: Any, **options: Any) -> dict[str, Any]:
    """The stored run's parameters: the ``k`` chosen and tried, the options, splits and search."""
    datasets = splits["datasets"]
    return {
        "k": k,
        "k_min": ks[0],
        "k_max": ks[-1],
        "k_values": len(ks),
        "selection": "val micro F1, ties -> smallest k",
        "vote_ties": "the tied class whose first neighbour is nearest",
        **options,
        **dict(
            splits, index_splits=list(splits["index_splits"]), datasets=list(datasets) if datasets else None
        ),
        "ef_search": res.ef_search,
        "exact_fallbacks": res.exact_fallbacks,
    }


def evaluate_knn(
    db: Database,
    model: str,
    *,
    k_range: Iterable[int] = range(1, 100),
    index_splits: Sequence[str] = ("train",),
    val_split: str = "val",
    test_split: str = "test",
    datasets: Sequence[str] | None = None,
    mode: str = "ann",
    ef_search: int | None = None,
    weighted: bool = False,
    connections: int = 2,
    store: bool = True,
    progress: bool = True,
    profile: str = "default",
) -> KnnResult:
    """Choose ``k`` on ``val_split`` by micro F1, report micro/macro F1, AUPRC and AUROC on
    ``test_split``, and store the run (kind ``knn``).

    ``weighted``: class scores are similarity-weighted vote fractions instead of plain ones.
    """
    from cbir_pg.errors import ConfigError

    ks = sorted({int(k) for k in k_range})
    if not ks or ks[0] < 1:
        raise ConfigError(f"k values must be positive, got {ks[:3]}...")
    t0 = time.perf_counter()
    splits = dict(index_splits=index_splits, val_split=val_split, test_split=test_split, datasets=datasets)
    s = _search(
        db, model, ks, splits, mode=mode, ef_search=ef_search, connections=connections, progress=progress
    )
    sc = _score(s, weighted)
    k = sc.selection.best_k
    params = _params(ks, k, splits, s.res, profile=profile, weighted=weighted)
    seconds = time.perf_counter() - t0
    run_id = _store(db, model, mode, s, sc, params, seconds) if store else None
    return KnnResult(
        model,
        run_id,
        k,
        sc.selection,
        sc.test,
        sc.val,
        sc.classes,
        s.nv,
        int(s.test.ids.size),
        int(s.res.n_index),
        mode,
        weighted,
        sc.p1,
        _class_sizes(s.res),
        params,
        seconds,
    )
