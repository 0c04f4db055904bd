"""Index-size ablation (Fig. 3B of the paper): how P@1 grows with the number of index images per class.

Take the classes with more than ``min_class_size`` index images, and a fixed query set of
``queries_per_class`` query-split images per class. For each size ``N`` and seed, the index is ``N``
random images of each of those classes and P@1 is measured on the fixed queries. Everything that
selects images is SQL (``sql/queries/analysis.sql``): the query set by ``md5('query:' || id)`` order,
the index subsets by ``md5(seed || ':' || id)`` order within each class (so subsets are nested), and
the top-1 searches by :func:`cbir_pg.eval.topn.topn` over an explicit id subset of the index.

Small data: when fewer than two classes have more than ``min_class_size`` index images, the threshold
is lowered to the largest requested size below the second-largest class (so at least two classes take
part); sizes are capped by the smallest eligible class (sizes above it become one point at that
size); and the query count is capped by the smallest number of query images of an eligible class.
Each such change is recorded in :attr:`AblationResult.notes` and in the stored run.

The default ``mode`` is ``exact``: with a handful of index images per class an HNSW scan filtered to
the subset would have to visit most of the graph, while an exact scan of the subset is cheap and exact.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from cbir_pg.db.database import Database

#: index images per class tried by default. Our choice: the paper (Fig. 3B) states only the range, 5 to
#: 3000 images per class, not the sizes it sampled in between, so these points are not the paper's.
DEFAULT_SIZES = (5, 10, 25, 50, 100, 250, 500, 1000, 3000)


@dataclass(frozen=True)
class AblationClass:
    label_id: int
    key: str
    n_index: int
    n_query: int


@dataclass(frozen=True)
class AblationPoint:
    index_size: int
    seed: int
    p_at_1: float
    n_queries: int
    n_index: int
    per_class: dict[int, float] = field(default_factory=dict)


@dataclass
class AblationResult:
    model: str
    run_id: int | None
    sizes: list[int]
    seeds: list[int]
    points: list[AblationPoint]
    classes: list[AblationClass]
    min_class_size: int
    queries_per_class: int
    scaled: bool
    notes: list[str]
    params: dict
    seconds: float

    def mean_by_size(self) -> dict[int, float]:
        """Mean P@1 over seeds for each index size."""
        out: dict[int, list[float]] = {}
        for p in self.points:
            out.setdefault(p.index_size, []).append(p.p_at_1)
        return {s: float(np.mean(v)) for s, v in sorted(out.items())}


@dataclass(frozen=True)
class AblationPlan:
    """What will be measured, after any scale-down (pure: see :func:`plan_ablation`)."""

    classes: list[AblationClass]
    sizes: list[int]
    min_class_size: int
    queries_per_class: int
    scaled: bool
    notes: list[str]


def plan_ablation(
    available: Sequence[AblationClass],
    sizes: Sequence[int],
    min_class_size: int,
    queries_per_class: int,
) -> AblationPlan:
    """Choose classes, sizes and query count, scaling down on small data (see the module docstring)."""
    from cbir_pg.errors import InputError

    notes: list[str] = []
    scaled = False
    sizes = sorted({int(s) for s in sizes if int(s) >= 1})
    if not sizes:
        raise InputError("no index sizes given")
    usable = [c for c in available if c.n_query > 0 and c.n_index > 0]
    if len(usable) < 2:
        raise InputError("the index-size ablation needs at least two classes with index and query images")
    threshold = int(min_class_size)
    eligible = [c for c in usable if c.n_index > threshold]
    if len(eligible) < 2:
        second = sorted((c.n_index for c in usable), reverse=True)[1]
        below = [s for s in sizes if s < second]
        new = max(below) if below else second - 1
        notes.append(
            f"only {len(eligible)} class(es) have more than {threshold} index images: "
            f"min-class-size lowered to {new}"
        )
        threshold, scaled = new, True
        eligible = [c for c in usable if c.n_index > threshold]
    cap = min(c.n_index for c in eligible)
    if sizes[-1] > cap:
        dropped = [s for s in sizes if s > cap]
        sizes = sorted({s for s in sizes if s <= cap} | {cap})
        notes.append(
            f"sizes {','.join(map(str, dropped))} exceed the smallest eligible class ({cap} images): capped at {cap}"
        )
        scaled = True
    qpc = int(queries_per_class)
    fewest = min(c.n_query for c in eligible)
    if fewest < qpc:
        notes.append(
            f"queries per class lowered from {qpc} to {fewest} (the smallest query split of an eligible class)"
        )
        qpc, scaled = fewest, True
    return AblationPlan(sorted(eligible, key=lambda c: c.label_id), sizes, threshold, qpc, scaled, notes)


@dataclass
class _Drawn:
    """The plan, its query images and one drawn index subset per (seed, size), read in one go."""

    plan: AblationPlan
    qids: np.ndarray
    qlab: np.ndarray
    subsets: dict[tuple[int, int], list[int]]
    all_embedded: bool


def _draw(db: Database, model: str, base: dict[str, Any], seeds: Sequence[int], **requested: Any) -> _Drawn:
    """Plan the ablation from the classes available, then draw its queries and index subsets in SQL."""
    from cbir_pg.eval import data, scope

    with db.connection() as conn:
        data.check_model(conn, model)
        all_embedded = scope.check_scope(
            conn, model, base["datasets"], (*base["index_splits"], base["query_split"])
        )
        available = [
            AblationClass(int(r["label_id"]), r["key"], int(r["n_index"]), int(r["n_query"]))
            for r in conn.execute(data.q("ablation_classes", model), base).fetchall()
        ]
        plan = plan_ablation(available, **requested)
        labels = [c.label_id for c in plan.classes]
        qrows = conn.execute(
            data.q("ablation_queries", model),
            {**base, "labels": labels, "per_class": plan.queries_per_class},
        ).fetchall()
        subsets: dict[tuple[int, int], list[int]] = {}
        for seed in seeds:
            for size in plan.sizes:
                rows = conn.execute(
                    data.q("ablation_index_subset", model),
                    {**base, "labels": labels, "seed": int(seed), "size": size},
                ).fetchall()
                subsets[(int(seed), size)] = [int(r["id"]) for r in rows]
    qids = np.array([r["id"] for r in qrows], dtype=np.int64)
    qlab = np.array([r["label_id"] for r in qrows], dtype=np.int64)
    return _Drawn(plan, qids, qlab, subsets, all_embedded)


def _measure(db: Database, model: str, d: _Drawn, mode: str) -> list[AblationPoint]:
    """P@1 (overall and per class) of the queries against each index subset."""
    from cbir_pg.eval.topn import IndexFilter, topn

    points: list[AblationPoint] = []
    qids, qlab = d.qids, d.qlab
    for (seed, size), ids in d.subsets.items():
        flt = IndexFilter(splits=None, image_ids=tuple(ids))
        res = topn(db, model, query_ids=qids, index_filter=flt, n=1, mode=mode, progress=False)
        hit = res.neighbour_labels[:, 0] == qlab
        per = {int(c): float(np.mean(hit[qlab == c])) for c in np.unique(qlab)}
        points.append(AblationPoint(size, seed, float(np.mean(hit)), int(qids.size), int(res.n_index), per))
    return points


def _params(
    plan: AblationPlan, requested: dict[str, Any], seeds: Sequence[int], base: dict
) -> dict[str, Any]:
    """The stored run's parameters: what was asked, what the plan made of it, and the scope."""
    return {
        "requested": {**requested, "sizes": sorted({int(s) for s in requested["sizes"]})},
        "sizes": plan.sizes,
        "seeds": [int(s) for s in seeds],
        "min_class_size": plan.min_class_size,
        "queries_per_class": plan.queries_per_class,
        "scaled": plan.scaled,
        "notes": plan.notes,
        "classes": [{"label_id": c.label_id, "key": c.key, "n_index": c.n_index} for c in plan.classes],
        **base,
    }


def _store(db: Database, model: str, mode: str, d: _Drawn, points, params: dict, seconds: float) -> int:
    """The run (kind ``ablation``): one P@1 metric per (index size, seed), the mean per size in its summary."""
    from cbir_pg.eval import runs
    from cbir_pg.eval.runs import Metric

    with db.connection() as conn:
        run_id = runs.insert_run(
            conn, kind="ablation", model=model, mode=mode, params=params, all_embedded=d.all_embedded
        )
        rows = [Metric("p_at_1", 1, "micro", p.p_at_1, index_size=p.index_size, seed=p.seed) for p in points]
        runs.write_metrics(conn, run_id, rows)
        runs.finish_run(
            conn,
            run_id,
            n_queries=int(d.qids.size),
            n_index=sum(c.n_index for c in d.plan.classes),
            metrics={"p_at_1": {str(s): v for s, v in _mean(points).items()}},
            total_s=seconds,
        )
    return run_id


def run_ablation(
    db: Database,
    model: str,
    *,
    sizes: Sequence[int] = DEFAULT_SIZES,
    min_class_size: int = 3000,
    queries_per_class: int = 38,
    seeds: Sequence[int] = (0,),
    index_splits: Sequence[str] = ("train",),
    query_split: str = "test",
    datasets: Sequence[str] | None = None,
    mode: str = "exact",
    store: bool = True,
    progress: bool = True,
) -> AblationResult:
    """Measure P@1 for each index size and seed, store the run (kind ``ablation``), return the points.

    Steps: plan and draw the queries and index subsets, search each subset, store the run."""
    t0 = time.perf_counter()
    ds = list(datasets) if datasets else None
    base = {"index_splits": list(index_splits), "query_split": query_split, "datasets": ds}
    requested = {"sizes": sizes, "min_class_size": min_class_size, "queries_per_class": queries_per_class}
    d = _draw(db, model, base, seeds, **requested)
    points = _measure(db, model, d, mode)
    seconds = time.perf_counter() - t0
    plan = d.plan
    params = _params(plan, requested, seeds, base)
    run_id = _store(db, model, mode, d, points, params, seconds) if store else None
    return AblationResult(
        model,
        run_id,
        plan.sizes,
        [int(s) for s in seeds],
        points,
        plan.classes,
        plan.min_class_size,
        plan.queries_per_class,
        plan.scaled,
        plan.notes,
        params,
        seconds,
    )


def _mean(points: Sequence[AblationPoint]) -> dict[int, float]:
    out: dict[int, list[float]] = {}
    for p in points:
        out.setdefault(p.index_size, []).append(p.p_at_1)
    return {s: float(np.mean(v)) for s, v in sorted(out.items())}
