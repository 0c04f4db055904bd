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
    from cbir_pg.errors import ConfigError, NotFoundError
    from cbir_pg.eval import data, runs, scope
    from cbir_pg.eval.runs import ClassMetric, Metric
    from cbir_pg.eval.topn import IndexFilter, topn

    ks = sorted({int(k) for k in k_range})
    if not ks or ks[0] < 1:
        raise ConfigError(f"k values must be positive, got {ks[:3]}...")
    K = ks[-1]
    t0 = time.perf_counter()
    all_embedded = scope.check(db, model, datasets, (*index_splits, val_split, test_split))
    val = data.split_ids(db, model, val_split, datasets)
    test = data.split_ids(db, model, test_split, datasets)
    if test.ids.size == 0:
        raise NotFoundError(f"no labelled {test_split!r} images with {model!r} embeddings")
    if val.ids.size == 0:
        raise NotFoundError(f"no labelled {val_split!r} images with {model!r} embeddings to choose k on")
    flt = IndexFilter(splits=tuple(index_splits), datasets=tuple(datasets) if datasets else None)
    both = np.r_[val.ids, test.ids]
    res = topn(
        db,
        model,
        query_ids=both,
        index_filter=flt,
        n=K,
        mode=mode,
        ef_search=ef_search,
        connections=connections,
        progress=progress,
    )
    if res.n_index == 0:
        raise NotFoundError(f"the index ({', '.join(index_splits)}) holds no {model!r} embeddings")
    nv = val.ids.size
    classes = sorted(
        {c for c in res.index_class_sizes if c >= 0} | set(val.labels.tolist()) | set(test.labels.tolist())
    )
    K_avail = int(min(K, res.n_index))
    sel = select_k(
        val.labels,
        res.neighbour_labels[:nv, :K_avail],
        classes,
        ks,
        res.similarities[:nv, :K_avail],
        weighted,
    )
    k = sel.best_k

    def at_k(labels, neigh, sims) -> ClassificationMetrics:
        pred, scores = KnnScorer(neigh, classes, sims, weighted).at(k)
        return classification_metrics(labels, pred, scores, classes)

    test_m = at_k(test.labels, res.neighbour_labels[nv:, :K_avail], res.similarities[nv:, :K_avail])
    val_m = at_k(val.labels, res.neighbour_labels[:nv, :K_avail], res.similarities[:nv, :K_avail])
    first = res.neighbour_labels[nv:, 0]
    p1 = {
        int(c): (int(np.sum(test.labels == c)), float(np.mean(first[test.labels == c] == c)))
        for c in np.unique(test.labels)
    }
    params = {
        "k": k,
        "k_min": ks[0],
        "k_max": K,
        "k_values": len(ks),
        "selection": "val micro F1, ties -> smallest k",
        "vote_ties": "the tied class whose first neighbour is nearest",
        "profile": profile,
        "weighted": weighted,
        "index_splits": list(index_splits),
        "val_split": val_split,
        "test_split": test_split,
        "datasets": list(datasets) if datasets else None,
        "ef_search": res.ef_search,
        "exact_fallbacks": res.exact_fallbacks,
    }
    seconds = time.perf_counter() - t0
    sizes = {int(c): int(n) for c, n in res.index_class_sizes.items() if c >= 0}
    run_id = None
    if store:
        curve = [Metric("val_f1", kk, "micro", v) for kk, v in sel.scores.items()]
        p1_overall = float(np.mean(first == test.labels))
        p1_rows = [ClassMetric(c, "p_at_1", 1, n, sizes.get(c, 0), v) for c, (n, v) in p1.items()]
        run_id = runs.store_classification_run(
            db,
            "knn",
            model,
            mode=mode,
            params=params,
            test=test_m,
            val=val_m,
            at=k,
            seed=0,
            n_queries=int(test.ids.size),
            n_index=int(res.n_index),
            seconds=seconds,
            class_sizes=sizes,
            test_class_counts=data.class_sizes(test.labels),
            extra_metrics={"k": k, "val_f1_micro": sel.best_score, "p_at_1": p1_overall},
            extra_metric_rows=[*curve, Metric("p_at_1", 1, "micro", p1_overall)],
            extra_class_rows=p1_rows,
            all_embedded=all_embedded,
        )
    return KnnResult(
        model,
        run_id,
        k,
        sel,
        test_m,
        val_m,
        classes,
        int(nv),
        int(test.ids.size),
        int(res.n_index),
        mode,
        weighted,
        p1,
        sizes,
        params,
        seconds,
    )
