"""``cbir-pg eval retrieval``: the paper's retrieval benchmark, top-N in SQL, P@N in Python, results
stored in the database (``cbir.eval_*``) and read back through the ``cbir_report`` views.

Steps: pick the query images (query splits of the chosen datasets, labelled, not excluded, with a
vector) → :func:`cbir_pg.eval.topn.topn` against the index images (index splits of the same datasets) →
:func:`cbir_pg.eval.metrics.summarise` → one transaction that stores the run, its per-query rows, its P@N
metrics and its per-class metrics. With ``compare_exact`` both modes run and the ann run also stores
the recall of its top N against exact search and the difference in P@N (``ann - exact``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np

from cbir_pg.db import identifiers, queries
from cbir_pg.db.connect import connection
from cbir_pg.errors import ConfigError, NotFoundError
from cbir_pg.eval import metrics, scope, store
from cbir_pg.eval.topn import MODES, IndexFilter, TopN, encoder_table, topn

SPLITS = ("train", "val", "test")


@dataclass
class ModeResult:
    """One stored run: the P@N summary and how the search went."""

    run_id: int
    mode: str
    ef_search: int | None
    summary: metrics.PrecisionSummary
    n_queries: int
    n_index: int
    seconds: float
    queries_per_second: float
    plan_uses_index: bool | None
    exact_fallbacks: int
    topn: TopN = field(repr=False)


@dataclass
class RetrievalResult:
    model: str
    ns: tuple[int, ...]
    mode: str
    runs: dict[str, ModeResult]
    index_filter: IndexFilter
    query_splits: tuple[str, ...]
    recall: np.ndarray | None = None  # (len(ns),), ann against exact
    delta_micro: np.ndarray | None = None  # P@N ann - exact
    delta_macro: np.ndarray | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def primary(self) -> ModeResult:
        return self.runs[self.mode]


def _index_params(conn: Any, model: str) -> dict[str, Any]:
    rows = conn.execute(
        queries.get("eval", "embedding_indexes"),
        {"table_name": f"cbir.{identifiers.embedding_table_name(model)}"},
    ).fetchall()
    indexes = []
    hnsw: dict[str, Any] | None = None
    for name, method, options, definition in rows:
        opts: dict[str, Any] = {}
        for opt in options or []:
            key, _, value = opt.partition("=")
            opts[key] = int(value) if value.isdigit() else value
        indexes.append({"name": name, "method": method, "options": opts, "definition": definition})
        if method == "hnsw" and hnsw is None:
            # pgvector's defaults when the index was built without options
            hnsw = {"name": name, "m": opts.get("m", 16), "ef_construction": opts.get("ef_construction", 64)}
    return {"indexes": indexes, "hnsw": hnsw}


def _check_splits(splits: Sequence[str], what: str) -> tuple[str, ...]:
    out = tuple(dict.fromkeys(splits))
    bad = [s for s in out if s not in SPLITS]
    if not out or bad:
        raise ConfigError(f"invalid {what} split(s) {bad or list(splits)!r}: use {', '.join(SPLITS)}")
    return out


def _summarise(t: TopN, ns: tuple[int, ...]) -> tuple[metrics.PrecisionSummary, np.ndarray]:
    sizes = t.class_sizes_for(t.query_labels) - t.query_in_index.astype(np.int64)
    return metrics.summarise(t.relevant, np.maximum(sizes, 0), t.query_labels, ns), np.maximum(sizes, 0)


def evaluate_retrieval(
    dsn: str,
    model: str,
    *,
    ns: Sequence[int] = metrics.DEFAULT_NS,
    index_splits: Sequence[str] = ("train",),
    query_splits: Sequence[str] = ("test",),
    datasets: Sequence[str] | None = None,
    mode: str = "ann",
    ef_search: int | None = None,
    compare_exact: bool = False,
    batch_size: int = 256,
    connections: int = 2,
    progress: bool = True,
) -> RetrievalResult:
    """Run the retrieval benchmark for ``model`` and store it; see the module docstring."""
    ns = metrics.check_ns(ns)
    if mode not in MODES:
        raise ConfigError(f"unknown mode {mode!r}: use 'ann' or 'exact'")
    index_splits = _check_splits(index_splits, "index")
    query_splits = _check_splits(query_splits, "query")
    ds = tuple(dict.fromkeys(datasets)) if datasets else None
    max_n = max(ns)

    with connection(dsn) as conn:
        table, _ = encoder_table(conn, model)
        if ds is not None:
            found = {r[0] for r in conn.execute(queries.get("eval", "dataset_keys"), {"datasets": list(ds)})}
            unknown = [d for d in ds if d not in found]
            if unknown:
                raise NotFoundError(f"unknown dataset(s): {', '.join(map(repr, unknown))}")
        all_embedded = scope.check_scope(conn, model, ds, (*index_splits, *query_splits))
        rows = conn.execute(
            queries.get("eval", "query_images", table=table),
            {"splits": list(query_splits), "datasets": list(ds) if ds else None},
        ).fetchall()
        index_params = _index_params(conn, model)
    query_ids = [int(r[0]) for r in rows]
    if not query_ids:
        raise NotFoundError(
            f"no query images: no labelled, embedded {'/'.join(query_splits)} images for model {model!r}"
            + (f" in {', '.join(ds)}" if ds else "")
        )

    index_filter = IndexFilter(splits=index_splits, datasets=ds)
    modes = ["exact", "ann"] if compare_exact else [mode]
    warnings: list[str] = []
    results: dict[str, tuple[TopN, metrics.PrecisionSummary, np.ndarray, float, datetime]] = {}
    for m in modes:
        started = datetime.now(timezone.utc)
        t = topn(
            dsn,
            model,
            query_ids=query_ids,
            index_filter=index_filter,
            n=max_n,
            mode=m,
            ef_search=ef_search,
            batch_size=batch_size,
            connections=connections,
            progress=progress,
        )
        if t.n_index == 0:
            raise NotFoundError(
                f"no index images: no embedded {'/'.join(index_splits)} images for model {model!r}"
            )
        t0 = time.perf_counter()
        summary, sizes = _summarise(t, ns)
        results[m] = (t, summary, sizes, time.perf_counter() - t0, started)
    if "ann" in results:
        t = results["ann"][0]
        if index_params["hnsw"] is None:
            warnings.append(
                f"model {model!r} has no HNSW index: ann mode ran as an exact scan (cbir-pg index build)"
            )
        elif t.plan_uses_index is False:
            warnings.append(
                "the planner chose a sequential scan over the HNSW index for this index set: ann = exact"
            )
        if t.exact_fallbacks:
            warnings.append(f"{t.exact_fallbacks} queries got a short ANN result and were re-run exactly")
    first = next(iter(results.values()))[1]
    if first.n_undefined:
        warnings.append(f"{first.n_undefined} queries belong to classes with no index image: left out of P@N")

    recall = d_micro = d_macro = None
    if compare_exact:
        ta, sa = results["ann"][0], results["ann"][1]
        te, se = results["exact"][0], results["exact"][1]
        recall = metrics.recall_at_n(ta.neighbour_ids, ta.similarities, te.similarities, te.counts, ns)
        d_micro = sa.micro - se.micro
        d_macro = sa.macro - se.macro

    base_params = {
        "ns": list(ns),
        "index_splits": list(index_splits),
        "query_splits": list(query_splits),
        "datasets": list(ds) if ds else None,
        "ef_search": ef_search,
        "batch_size": batch_size,
        "connections": connections,
        "compare_exact": compare_exact,
        "index_filter": index_filter.describe(),
        "distance": "cosine",
        "ties": "distance, then image_id",
    }
    stored: dict[str, ModeResult] = {}
    code = store.code_version()
    with connection(dsn) as conn:
        for m in modes:  # exact first, so the ann run can reference it
            t, summary, sizes, agg_s, started = results[m]
            t_store = time.perf_counter()
            params = dict(
                base_params,
                ef_search_effective=t.ef_search,
                plan_uses_index=t.plan_uses_index,
                exact_fallbacks=t.exact_fallbacks,
                n_undefined_queries=summary.n_undefined,
                missing_query_vectors=len(t.missing_query_ids),
            )
            if m == "ann" and compare_exact:
                params["exact_run_id"] = stored["exact"].run_id
            run_id = store.insert_run(
                conn,
                kind="retrieval",
                model=model,
                mode=m,
                params=params,
                index_params=index_params,
                code=code,
            )
            scope.record_coverage(conn, run_id, all_embedded)
            store.write_queries(
                conn,
                run_id,
                query_ids=t.query_ids,
                labels=t.query_labels,
                class_index_sizes=sizes,
                neighbour_ids=t.neighbour_ids,
                relevant=t.relevant,
                similarities=t.similarities,
                counts=t.counts,
            )
            rows: list[tuple[str, int, str, float]] = []
            for j, n in enumerate(ns):
                rows += [("P", n, "micro", summary.micro[j]), ("P", n, "macro", summary.macro[j])]
            run_metrics: dict[str, Any] = summary.as_dict()
            if m == "ann" and compare_exact:
                assert recall is not None and d_micro is not None and d_macro is not None
                for j, n in enumerate(ns):
                    rows += [
                        ("recall", n, "micro", recall[j]),
                        ("dP", n, "micro", d_micro[j]),
                        ("dP", n, "macro", d_macro[j]),
                    ]
                    run_metrics[f"P@{n}"].update(recall=recall[j], dP_micro=d_micro[j], dP_macro=d_macro[j])
            store.write_metrics(conn, run_id, rows)
            class_rows = []
            for c, lab in enumerate(summary.classes):
                if lab < 0:
                    continue
                size = int(t.index_class_sizes.get(int(lab), 0))
                for j, n in enumerate(ns):
                    class_rows.append(
                        (int(lab), "P", n, int(summary.class_n_queries[c]), size, summary.class_means[c, j])
                    )
            store.write_class_metrics(conn, run_id, class_rows)
            timings = {
                "topn_s": t.seconds,
                "queries_per_s": t.queries_per_second,
                "aggregate_s": agg_s,
                "store_s": time.perf_counter() - t_store,
            }
            timings["total_s"] = timings["topn_s"] + timings["aggregate_s"] + timings["store_s"]
            store.finish_run(
                conn,
                run_id,
                n_queries=len(t.query_ids),
                n_index=t.n_index,
                metrics=run_metrics,
                timings=timings,
                started_at=started,
            )
            stored[m] = ModeResult(
                run_id=run_id,
                mode=m,
                ef_search=t.ef_search,
                summary=summary,
                n_queries=len(t.query_ids),
                n_index=t.n_index,
                seconds=t.seconds,
                queries_per_second=t.queries_per_second,
                plan_uses_index=t.plan_uses_index,
                exact_fallbacks=t.exact_fallbacks,
                topn=t,
            )
        if compare_exact:
            store.finish_run_params(conn, stored["exact"].run_id, {"ann_run_id": stored["ann"].run_id})

    return RetrievalResult(
        model=model,
        ns=ns,
        mode="ann" if compare_exact else mode,
        runs=stored,
        index_filter=index_filter,
        query_splits=query_splits,
        recall=recall,
        delta_micro=d_micro,
        delta_macro=d_macro,
        warnings=warnings,
    )
