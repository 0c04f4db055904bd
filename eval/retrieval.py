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
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any

import numpy as np

from cbir_pg.db import identifiers, queries
from cbir_pg.db.database import Database
from cbir_pg.errors import ConfigError, NotFoundError
from cbir_pg.eval import metrics, runs, scope
from cbir_pg.eval.topn import MODES, IndexFilter, TopN, encoder_table, topn
from cbir_pg.rules import SPLITS


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
    #: with ``relevance="judgements"``: P@N with the judgements as ground truth, and how many queries have them
    judged: Any = None

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
    for r in rows:
        name, method, definition = r["name"], r["method"], r["definition"]
        opts: dict[str, Any] = {}
        for opt in r["options"] or []:
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


@dataclass(frozen=True)
class _Options:
    """The checked options of one retrieval evaluation."""

    ns: tuple[int, ...]
    index_splits: tuple[str, ...]
    query_splits: tuple[str, ...]
    datasets: tuple[str, ...] | None
    mode: str
    ef_search: int | None
    compare_exact: bool
    batch_size: int
    connections: int
    progress: bool
    relevance: str

    @property
    def index_filter(self) -> IndexFilter:
        return IndexFilter(splits=self.index_splits, datasets=self.datasets)

    @property
    def modes(self) -> list[str]:
        """The modes searched, exact first (so the ann run can reference it)."""
        return ["exact", "ann"] if self.compare_exact else [self.mode]

    def params(self) -> dict[str, Any]:
        """The run parameters every stored mode shares."""
        return {
            "ns": list(self.ns),
            "index_splits": list(self.index_splits),
            "query_splits": list(self.query_splits),
            "datasets": list(self.datasets) if self.datasets else None,
            "ef_search": self.ef_search,
            "batch_size": self.batch_size,
            "connections": self.connections,
            "compare_exact": self.compare_exact,
            "index_filter": self.index_filter.describe(),
            "distance": "cosine",
            "ties": "distance, then image_id",
            "relevance": self.relevance,
        }


def _checked(o: _Options, prof: Any) -> _Options:
    """Validate the options of :func:`evaluate_retrieval` (clear errors) and normalise them."""
    _check_profile(prof, o.index_splits, o.query_splits, o.mode, o.compare_exact)
    ns = metrics.check_ns(o.ns)
    if o.mode not in MODES:
        raise ConfigError(f"unknown mode {o.mode!r}: use 'ann' or 'exact'")
    index_splits = _check_splits(o.index_splits, "index")
    query_splits = _check_splits(o.query_splits, "query")
    if o.relevance not in ("labels", "judgements"):
        raise ConfigError(f"unknown relevance {o.relevance!r}: use labels or judgements")
    if o.relevance == "judgements" and o.compare_exact:
        raise ConfigError("--relevance judgements runs one mode: leave out --compare-exact")
    datasets = tuple(dict.fromkeys(o.datasets)) if o.datasets else None
    return replace(o, ns=ns, index_splits=index_splits, query_splits=query_splits, datasets=datasets)


def evaluate_retrieval(
    db: Database,
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
    profile: str = "default",
    relevance: str = "labels",
) -> RetrievalResult:
    """Run the retrieval benchmark for ``model`` and store it; see the module docstring.

    ``relevance="judgements"``: the radiologists' judgements (:mod:`cbir_pg.eval.judgements`) replace the
    label rule for the pairs they cover; the run is stored under the model name ``KEY[judgements]``.

    Steps: choose the queries, run each mode (top-N in SQL, P@N in Python), compare ann with exact,
    store every mode as one run. ``profile`` (:mod:`cbir_pg.profiles`) is recorded in the run;
    ``paper`` insists on the paper's protocol (test queries against the train index, exact search, no
    ann comparison) and warns when a dataset in scope is not a ``dkfz-splits`` import made with it."""
    from cbir_pg.profiles import get_profile

    prof = get_profile(profile)
    what = (ns, index_splits, query_splits, datasets)  # in the order of _Options' fields
    how = (mode, ef_search, compare_exact, batch_size, connections, progress, relevance)
    opts = _checked(_Options(*what, *how), prof)
    query_ids, index_params, all_embedded = _choose_queries(
        db, model, (*opts.index_splits, *opts.query_splits), opts.query_splits, opts.datasets
    )
    done = {m: _run_mode(db, model, m, query_ids, opts) for m in opts.modes}
    judged = _apply_judgements(db, done, opts.ns) if relevance == "judgements" else None
    provenance, profile_warnings = _provenance(db, model, opts.datasets, prof)
    warnings = profile_warnings + _warnings(model, done, index_params)
    comparison = _compare(done["ann"], done["exact"], opts.ns) if compare_exact else None
    base_params = {**opts.params(), "profile": prof.name, **provenance, **_judged_params(judged)}
    stored_name = f"{model}[judgements]" if judged is not None else model
    stored = _store(db, stored_name, done, opts.ns, base_params, index_params, comparison, all_embedded)
    return _result(model, opts, stored, comparison, warnings, judged)


def _result(model: str, opts: _Options, stored, comparison, warnings: list[str], judged) -> RetrievalResult:
    """What :func:`evaluate_retrieval` returns: the stored runs and, with ``compare_exact``, the ann run
    against exact (recall@N and P@N differences)."""
    recall, d_micro, d_macro = comparison if comparison is not None else (None, None, None)
    return RetrievalResult(
        model=model,
        ns=opts.ns,
        mode="ann" if opts.compare_exact else opts.mode,
        runs=stored,
        index_filter=opts.index_filter,
        query_splits=opts.query_splits,
        recall=recall,
        delta_micro=d_micro,
        delta_macro=d_macro,
        warnings=warnings,
        judged=judged,
    )


def _judged_params(judged: Any) -> dict[str, Any]:
    """The run parameters that say how the judgements changed it (none for label relevance)."""
    if judged is None:
        return {}
    return {
        "n_judged_queries": judged.n_judged_queries,
        "n_judged_pairs": judged.n_judged_pairs,
        "n_disagreements": judged.n_disagreements,
        "judged_queries_micro": judged.judged_micro.tolist(),
        "label_micro": judged.label_micro.tolist(),
    }


def _apply_judgements(db: Database, done: dict[str, _ModeRun], ns: tuple[int, ...]):
    """Replace each mode's label relevance by the judgements where they exist, and re-aggregate."""
    from cbir_pg.eval.judgements import apply_judgements, judged_precision, load_judged

    with db.connection() as conn:
        judged = load_judged(conn)
    out = None
    for m, r in done.items():
        t = r.topn
        out = judged_precision(t.query_ids, t.neighbour_ids, t.relevant, r.class_sizes, judged, ns)
        t.relevant = apply_judgements(t.query_ids, t.neighbour_ids, t.relevant, judged)[0]
        r.summary, r.class_sizes = _summarise(t, ns)
        done[m] = r
    return out


def _check_profile(prof: Any, index_splits, query_splits, mode: str, compare_exact: bool) -> None:
    """The paper profile runs the paper's protocol only: a clear error for anything else."""
    if prof.name != "paper":
        return
    wanted = (tuple(prof.index_splits), tuple(prof.query_splits), prof.search_mode, False)
    given = (tuple(index_splits), tuple(query_splits), mode, compare_exact)
    if given != wanted:
        raise ConfigError(
            "--profile paper evaluates test queries against the train index with exact search"
            f" (index {'/'.join(wanted[0])}, query {'/'.join(wanted[1])}, --mode exact, no --compare-exact);"
            f" got index {'/'.join(given[0])}, query {'/'.join(given[1])}, mode {mode}"
            + (", --compare-exact" if compare_exact else "")
        )


def _provenance(
    db: Database, model: str, ds: tuple[str, ...] | None, prof: Any
) -> tuple[dict[str, Any], list[str]]:
    """Where the model's vectors come from (recorded in the run) and, for a profile that expects a
    dataset kind, a warning naming the datasets in scope that were not imported that way."""
    with db.connection() as conn:
        prov = conn.execute(queries.get("eval", "encoder_provenance"), {"model": model}).fetchone()
        scope = conn.execute(
            queries.get("eval", "dataset_profiles"), {"datasets": list(ds) if ds else None}
        ).fetchall()
    imported = bool(prov) and str(prov["weights_source"] or "").startswith("import:")
    params = {
        "encoder_config_hash": prov["config_hash"] if prov else None,
        "vectors": "imported" if imported else "computed",
        "imported_files": [f.get("sha256") for f in (prov["imported_files"] if prov else [])] or None,
    }
    warnings: list[str] = []
    if prof.dataset_kind:
        off = [
            f"{r['key']} ({r['kind']}, profile {r['profile']})"
            for r in scope
            if r["kind"] != prof.dataset_kind or r["profile"] != prof.name
        ]
        if off:
            # the run follows the protocol but its data were not imported the paper's way: it must not be
            # labelled (and compared) as a paper run
            params["profile"] = f"{prof.name}-protocol"
            warnings.append(
                f"--profile {prof.name}: not {prof.dataset_kind} imports made with --profile {prof.name}: "
                + ", ".join(off)
                + f"; the numbers are not comparable with the paper's (run labelled {prof.name}-protocol)"
            )
    return params, warnings


@dataclass
class _ModeRun:
    """One mode's search and its aggregation, before it is stored."""

    topn: TopN
    summary: metrics.PrecisionSummary
    class_sizes: np.ndarray
    aggregate_s: float
    started: datetime


def _choose_queries(
    db: Database,
    model: str,
    scope_splits: Sequence[str],
    query_splits: Sequence[str],
    ds: tuple[str, ...] | None,
) -> tuple[list[int], dict[str, Any], bool]:
    """The query images (labelled, embedded, not excluded, of the query splits and datasets), the
    model's index parameters and whether every image of the index and query splits has a vector;
    clear errors for unknown or unfinished datasets (:mod:`cbir_pg.eval.scope`) or no queries."""
    with db.connection() as conn:
        table, _ = encoder_table(conn, model)
        from cbir_pg.datasets.catalog import check_known_datasets

        check_known_datasets(conn, ds)
        all_embedded = scope.check_scope(conn, model, ds, scope_splits)
        rows = conn.execute(
            queries.get("eval", "query_images", table=table),
            {"splits": list(query_splits), "datasets": list(ds) if ds else None},
        ).fetchall()
        index_params = _index_params(conn, model)
    query_ids = [int(r["id"]) for r in rows]
    if not query_ids:
        raise NotFoundError(
            f"no query images: no labelled, embedded {'/'.join(query_splits)} images for model {model!r}"
            + (f" in {', '.join(ds)}" if ds else "")
        )
    return query_ids, index_params, all_embedded


def _run_mode(db: Database, model: str, mode: str, query_ids: list[int], opts: _Options) -> _ModeRun:
    """Top-max(N) in SQL for one mode, then P@N per query, per class and overall."""
    started = datetime.now(timezone.utc)
    t = topn(
        db,
        model,
        query_ids=query_ids,
        index_filter=opts.index_filter,
        n=max(opts.ns),
        mode=mode,
        ef_search=opts.ef_search,
        batch_size=opts.batch_size,
        connections=opts.connections,
        progress=opts.progress,
    )
    if t.n_index == 0:
        raise NotFoundError(
            f"no index images: no embedded {'/'.join(opts.index_splits)} images for model {model!r}"
        )
    t0 = time.perf_counter()
    summary, sizes = _summarise(t, opts.ns)
    return _ModeRun(t, summary, sizes, time.perf_counter() - t0, started)


def _warnings(model: str, done: dict[str, _ModeRun], index_params: dict[str, Any]) -> list[str]:
    warnings: list[str] = []
    if "ann" in done:
        t = done["ann"].topn
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
    first = next(iter(done.values())).summary
    if first.n_undefined:
        warnings.append(f"{first.n_undefined} queries belong to classes with no index image: left out of P@N")
    return warnings


def _compare(
    ann: _ModeRun, exact: _ModeRun, ns: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ANN against exact: recall@N of the neighbour lists and the P@N differences (micro, macro)."""
    ta, te = ann.topn, exact.topn
    recall = metrics.recall_at_n(ta.neighbour_ids, ta.similarities, te.similarities, te.counts, ns)
    return recall, ann.summary.micro - exact.summary.micro, ann.summary.macro - exact.summary.macro


def _store(
    db: Database,
    model: str,
    done: dict[str, _ModeRun],
    ns: tuple[int, ...],
    base_params: dict[str, Any],
    index_params: dict[str, Any],
    comparison: tuple[np.ndarray, np.ndarray, np.ndarray] | None,
    all_embedded: bool | None = None,
) -> dict[str, ModeResult]:
    """Every mode as one run (exact first, so the ann run can reference it), in one transaction."""
    stored: dict[str, ModeResult] = {}
    with db.connection() as conn:
        for m, r in done.items():
            t, summary = r.topn, r.summary
            t_store = time.perf_counter()
            compared = comparison if m == "ann" else None
            params = _mode_params(base_params, r)
            if compared is not None:
                params["exact_run_id"] = stored["exact"].run_id
            run_id = runs.insert_run(
                conn,
                kind="retrieval",
                model=model,
                mode=m,
                params=params,
                index_params=index_params,
                all_embedded=all_embedded,
            )
            run_metrics, extra_rows = _comparison_metrics(summary, ns, compared)
            write_topn(conn, run_id, t, r.class_sizes, summary, ns, extra_rows)
            timings = {
                "topn_s": t.seconds,
                "queries_per_s": t.queries_per_second,
                "aggregate_s": r.aggregate_s,
                "store_s": time.perf_counter() - t_store,
            }
            runs.finish_run(
                conn,
                run_id,
                n_queries=len(t.query_ids),
                n_index=t.n_index,
                metrics=run_metrics,
                total_s=timings["topn_s"] + timings["aggregate_s"] + timings["store_s"],
                timings=timings,
                started_at=r.started,
            )
            stored[m] = _mode_result(run_id, m, r)
        if comparison is not None:
            runs.merge_params(conn, stored["exact"].run_id, {"ann_run_id": stored["ann"].run_id})
    return stored


def _mode_params(base_params: dict[str, Any], r: _ModeRun) -> dict[str, Any]:
    """One mode's run parameters: the shared ones and how its search went."""
    t = r.topn
    return dict(
        base_params,
        ef_search_effective=t.ef_search,
        plan_uses_index=t.plan_uses_index,
        exact_fallbacks=t.exact_fallbacks,
        n_undefined_queries=r.summary.n_undefined,
        missing_query_vectors=len(t.missing_query_ids),
    )


def _comparison_metrics(
    summary: metrics.PrecisionSummary,
    ns: tuple[int, ...],
    comparison: tuple[np.ndarray, np.ndarray, np.ndarray] | None,
) -> tuple[dict[str, Any], list[runs.Metric]]:
    """The run's summary metrics and, for an ann run compared with exact, its recall and P@N
    differences (added to the summary and as extra metric rows)."""
    run_metrics: dict[str, Any] = summary.as_dict()
    rows: list[runs.Metric] = []
    if comparison is not None:
        recall, d_micro, d_macro = comparison
        for j, n in enumerate(ns):
            rows += [
                runs.Metric("recall", n, "micro", recall[j]),
                runs.Metric("dP", n, "micro", d_micro[j]),
                runs.Metric("dP", n, "macro", d_macro[j]),
            ]
            run_metrics[f"P@{n}"].update(recall=recall[j], dP_micro=d_micro[j], dP_macro=d_macro[j])
    return run_metrics, rows


def _mode_result(run_id: int, mode: str, r: _ModeRun) -> ModeResult:
    t = r.topn
    return ModeResult(
        run_id=run_id,
        mode=mode,
        ef_search=t.ef_search,
        summary=r.summary,
        n_queries=len(t.query_ids),
        n_index=t.n_index,
        seconds=t.seconds,
        queries_per_second=t.queries_per_second,
        plan_uses_index=t.plan_uses_index,
        exact_fallbacks=t.exact_fallbacks,
        topn=t,
    )


def write_topn(
    conn: Any,
    run_id: int,
    t: TopN,
    class_sizes: np.ndarray,
    summary: metrics.PrecisionSummary,
    ns: tuple[int, ...],
    extra_rows: Sequence[runs.Metric] = (),
) -> None:
    """A P@N run's rows: per-query neighbours, P@N (micro, macro) and ``extra_rows``, and per-class P@N
    with each class's index size (retrieval and the SQL-API rankings of :mod:`cbir_pg.eval.fusion`)."""
    runs.write_queries(
        conn,
        run_id,
        query_ids=t.query_ids,
        labels=t.query_labels,
        class_index_sizes=class_sizes,
        neighbour_ids=t.neighbour_ids,
        relevant=t.relevant,
        similarities=t.similarities,
        counts=t.counts,
    )
    rows = [runs.Metric("P", n, avg, getattr(summary, avg)[j]) for j, n in enumerate(ns) for avg in AVERAGES]
    runs.write_metrics(conn, run_id, [*rows, *extra_rows])
    runs.write_class_metrics(conn, run_id, _class_rows(t, summary, ns))


AVERAGES = ("micro", "macro")


def _class_rows(t: TopN, summary: metrics.PrecisionSummary, ns: tuple[int, ...]) -> list[runs.ClassMetric]:
    out = []
    for c, lab in enumerate(summary.classes):
        if lab < 0:
            continue
        size = int(t.index_class_sizes.get(int(lab), 0))
        for j, n in enumerate(ns):
            out.append(
                runs.ClassMetric(
                    int(lab), "P", n, int(summary.class_n_queries[c]), size, summary.class_means[c, j]
                )
            )
    return out
