"""``cbir-pg eval retrieval --fuse / --expand / --rerank``: the retrieval benchmark for rankings that
combine models, expand the query or re-rank, computed by the SQL API of ``sql/schema/25_fusion.sql``
(``cbir.similar_images_fused``, ``similar_images_expanded``, ``similar_images_reranked``) and scored by
the same P@N code as a single model (:func:`eval.metrics.summarise`).

* Queries: the labelled, non-excluded images of the query splits (and datasets) with a vector in every
  member model. Index: the non-excluded images of the index split (and dataset) with a vector in every
  member model, i.e. exactly what the SQL functions search with ``p_split``/``p_dataset``; so the index
  is one split and at most one dataset.
* alpha-QE takes its m neighbours through the same filters as the final search, i.e. from the index
  split only, never the query itself (``exclude_self``) and never a query-split image: no label leaks.
* Modes: ``exact`` passes ``p_search => 'exact'`` (every model's candidates by a sequential scan);
  ``ann`` passes ``'auto'`` (HNSW) with ``hnsw.ef_search`` set as for a single model (16 N, at least the
  K' candidates, which cbir.knn raises it to).
* Each variant is stored as its own ``retrieval`` run whose model column names it (:attr:`Ranking.name`,
  e.g. ``rrf(efficientnet_lite0,efficientnet_lite2)+aqe(m=2,alpha=3)``), so it is its own leaderboard
  row; every parameter is in the run's ``params``. The stored ``similarities`` are the ranking's scores.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np
import psycopg

from cbir_pg.cohort import Cohort
from cbir_pg.db import identifiers, queries
from cbir_pg.db.database import Database, dict_cursor
from cbir_pg.errors import ConfigError, NotFoundError
from cbir_pg.eval import metrics, runs
from cbir_pg.eval.retrieval import _check_splits, _index_params, write_topn
from cbir_pg.eval.scope import index_cohort
from cbir_pg.eval.topn import MODES, TopN, encoder_table
from cbir_pg.rules import DEFAULT_EF_SEARCH, EF_PER_RESULT, MAX_EF_SEARCH, check_ef_search

FUSION_METHODS = ("rrf", "mean")


def _num(x: float) -> str:
    return f"{x:g}"


@dataclass(frozen=True)
class Ranking:
    """What is ranked: one model or a fusion of several, optionally alpha-QE and/or k-reciprocal
    re-ranking (re-ranking takes one model)."""

    models: tuple[str, ...]
    fusion: str = "rrf"  # with more than one model
    c: float = 60.0
    candidates: int | None = None  # K' per model (fusion) / re-ranked (rerank); None: the SQL default
    expand: tuple[int, float] | None = None  # (m, alpha)
    rerank: tuple[int, float] | None = None  # (k1, lambda)

    def __post_init__(self) -> None:
        if not self.models:
            raise ConfigError("give at least one model")
        for m in self.models:
            identifiers.check_key(m)
        if len(set(self.models)) != len(self.models):
            raise ConfigError(f"models must be distinct: {', '.join(self.models)}")
        if self.fusion not in FUSION_METHODS:
            raise ConfigError(f"unknown fusion method {self.fusion!r}: use {' or '.join(FUSION_METHODS)}")
        if self.rerank is not None and self.fused:
            raise ConfigError("--rerank takes one model: it cannot be combined with --fuse")
        if not self.fused and self.expand is None and self.rerank is None:
            raise ConfigError("nothing to evaluate beyond a single model: give --fuse, --expand or --rerank")
        if self.expand is not None:
            m, alpha = self.expand
            if not (1 <= m <= 1000) or not (0 <= alpha <= 100):
                raise ConfigError(f"--expand m,alpha: m in 1..1000 and alpha in 0..100, got {m},{alpha}")
        if self.rerank is not None:
            k1, lam = self.rerank
            if not (1 <= k1 <= 1000) or not (0 <= lam <= 1):
                raise ConfigError(f"--rerank k1,lambda: k1 in 1..1000 and lambda in 0..1, got {k1},{lam}")
        if self.c < 0:
            raise ConfigError(f"rrf c must be non-negative, got {self.c}")

    @property
    def fused(self) -> bool:
        return len(self.models) > 1

    @property
    def name(self) -> str:
        """The leaderboard's model column: members and method, then the options with their parameters."""
        if self.fused:
            base = f"{self.fusion}({','.join(self.models)})"
            if self.fusion == "rrf" and self.c != 60:
                base = f"rrf[c={_num(self.c)}]({','.join(self.models)})"
        else:
            base = self.models[0]
        if self.expand is not None:
            base += f"+aqe(m={self.expand[0]},alpha={_num(self.expand[1])})"
        if self.rerank is not None:
            base += f"+krr(k1={self.rerank[0]},lambda={_num(self.rerank[1])})"
        return base

    def params(self) -> dict[str, Any]:
        return {
            "models": list(self.models),
            "fusion": self.fusion if self.fused else None,
            "rrf_c": self.c if self.fused and self.fusion == "rrf" else None,
            "candidates": self.candidates,
            "expand": {"m": self.expand[0], "alpha": self.expand[1]} if self.expand else None,
            "rerank": {"k1": self.rerank[0], "lambda": self.rerank[1], "method": "k-reciprocal (simplified)"}
            if self.rerank
            else None,
        }

    def statement(self, n: int, index: Cohort, search: str) -> tuple[Any, dict[str, Any]]:
        """The named batch query and its parameters (``query_ids`` is added per batch); ``index`` is the
        cohort searched (:func:`cbir_pg.eval.scope.index_cohort`)."""
        m, alpha = self.expand if self.expand else (0, 3.0)
        common = {"n": n, "cohort": index.sql(), "search": search, "expand_m": m, "alpha": alpha}
        if self.rerank is not None:
            k1, lam = self.rerank
            params = dict(common, model=self.models[0], k1=k1, candidates=self.candidates)
            params["lambda"] = lam
            return queries.get("eval", "reranked_batch"), params
        if self.fused:
            params = dict(
                common, models=list(self.models), method=self.fusion, c=self.c, candidates=self.candidates
            )
            return queries.get("eval", "fused_batch"), params
        return queries.get("eval", "expanded_batch"), dict(common, model=self.models[0])


@dataclass
class RankingResult:
    ranking: Ranking
    run_id: int
    mode: str
    ns: tuple[int, ...]
    summary: metrics.PrecisionSummary
    topn: TopN = field(repr=False)
    n_queries: int = 0
    n_index: int = 0
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)

    @property
    def model(self) -> str:
        return self.ranking.name


def _images(
    conn: psycopg.Connection, models: Sequence[str], splits: Sequence[str], datasets
) -> dict[int, int]:
    """``{image_id: label_id}`` of the non-excluded images of ``splits`` with a vector in every model."""
    out: dict[int, int] | None = None
    for model in models:
        table, _ = encoder_table(conn, model)
        rows = (
            dict_cursor(conn)
            .execute(
                queries.get("eval", "model_images", table=table),
                {"splits": list(splits), "datasets": list(datasets) if datasets else None},
            )
            .fetchall()
        )
        got = {int(r["id"]): int(r["label_id"]) for r in rows}
        out = got if out is None else {i: lab for i, lab in out.items() if i in got}
    return out or {}


@dataclass(frozen=True)
class _Plan:
    """The checked options of one ranking evaluation and what follows from them."""

    ns: tuple[int, ...]
    index_split: str
    query_splits: tuple[str, ...]
    datasets: tuple[str, ...] | None
    mode: str
    ef_search: int | None
    batch_size: int

    @property
    def n(self) -> int:
        return max(self.ns)

    @property
    def search(self) -> str:
        """The SQL API's ``p_search``: a sequential scan of every model (exact) or HNSW (auto)."""
        return "exact" if self.mode == "exact" else "auto"

    @property
    def ef(self) -> int | None:
        """``hnsw.ef_search`` for ann mode: as for a single model (16 N), at least N."""
        if self.mode != "ann":
            return None
        return min(
            MAX_EF_SEARCH, max(self.ef_search or max(DEFAULT_EF_SEARCH, EF_PER_RESULT * self.n), self.n)
        )

    def index_cohort(self) -> Cohort:
        ds = self.datasets
        return index_cohort(self.index_split, ds[0] if ds and len(ds) == 1 else None)


def _plan(db: Database, *, ns, index_split, query_splits, datasets, mode, ef_search, batch_size) -> _Plan:
    """Validate the options of :func:`evaluate_ranking` (clear errors) and normalise them."""
    ns = metrics.check_ns(ns)
    check_ef_search(ef_search)
    if mode not in MODES:
        raise ConfigError(f"unknown mode {mode!r}: use 'ann' or 'exact'")
    (index_split,) = _check_splits([index_split], "index")
    query_splits = _check_splits(query_splits, "query")
    ds = tuple(dict.fromkeys(datasets)) if datasets else None
    if ds is not None and len(ds) > 1:
        with db.connection() as conn:
            every = {r["key"] for r in dict_cursor(conn).execute(queries.get("eval", "all_dataset_keys"))}
        if set(ds) != every:  # all of them together is the same as no restriction
            raise ConfigError(
                "--fuse/--expand/--rerank search one dataset or all of them (the SQL API's p_dataset): "
                f"got {', '.join(ds)}"
            )
    return _Plan(ns, index_split, query_splits, ds, mode, ef_search, batch_size)


@dataclass
class _Searched:
    """The images of one evaluation and each query's ranking, read in one snapshot."""

    index: dict[int, int]  # image id -> label id
    qmap: dict[int, int]  # query id -> label id (labelled only)
    qids: np.ndarray
    index_params: dict[str, Any]
    ids: np.ndarray
    scores: np.ndarray
    relevant: np.ndarray
    counts: np.ndarray
    seconds: float


def _choose_images(
    conn: psycopg.Connection, ranking: Ranking, plan: _Plan, query_ids: Sequence[int] | None
) -> tuple[dict[int, int], dict[int, int]]:
    """The index images and the labelled query images (``{id: label}``), clear errors when either is empty."""
    from cbir_pg.datasets.catalog import check_known_datasets

    check_known_datasets(conn, plan.datasets)
    index = _images(conn, ranking.models, [plan.index_split], plan.datasets)
    candidates = _images(conn, ranking.models, plan.query_splits, plan.datasets)
    qmap = {i: lab for i, lab in candidates.items() if lab >= 0}
    if query_ids is not None:
        qmap = {int(i): qmap[int(i)] for i in query_ids if int(i) in qmap}
    if not qmap:
        raise NotFoundError(
            f"no query images: no labelled {'/'.join(plan.query_splits)} images with a vector in every "
            f"model of {ranking.name}"
        )
    if not index:
        raise NotFoundError(f"no index images: no {plan.index_split} images with a vector in every model")
    return index, qmap


def _search(db: Database, ranking: Ranking, plan: _Plan, query_ids: Sequence[int] | None) -> _Searched:
    """Every query's top N through the SQL API, in batches, in one read-only REPEATABLE READ transaction."""
    stmt, base = ranking.statement(plan.n, plan.index_cohort(), plan.search)
    with db.connection() as conn:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ  # one snapshot for every query
        cur = dict_cursor(conn)
        index, qmap = _choose_images(conn, ranking, plan, query_ids)
        qids = np.array(sorted(qmap), dtype=np.int64)
        index_params = {m: _index_params(conn, m) for m in ranking.models}
        if plan.ef is not None:  # transaction-local: the whole evaluation is one read-only transaction
            cur.execute(queries.get("eval", "set_ef_search"), {"value": str(plan.ef)})
        q, n = len(qids), plan.n
        out = _Searched(
            index,
            qmap,
            qids,
            index_params,
            ids=np.full((q, n), -1, dtype=np.int64),
            scores=np.full((q, n), np.nan),
            relevant=np.zeros((q, n), dtype=bool),
            counts=np.zeros(q, dtype=np.int64),
            seconds=0.0,
        )
        t0 = time.perf_counter()
        for start in range(0, q, plan.batch_size):
            idx = np.arange(start, min(start + plan.batch_size, q))
            for r in cur.execute(stmt, dict(base, query_ids=qids[idx].tolist())).fetchall():
                i, j = idx[r["ord"] - 1], r["rank"] - 1
                out.ids[i, j], out.scores[i, j], out.relevant[i, j] = r["image_id"], r["score"], r["relevant"]
                out.counts[i] += 1
        out.seconds = time.perf_counter() - t0
        conn.rollback()
    return out


def _as_topn(s: _Searched, plan: _Plan) -> TopN:
    """The rankings as a :class:`TopN` (scores as similarities; neighbour labels are not read)."""
    labels_index = np.array(list(s.index.values()), dtype=np.int64)
    u, cnt = np.unique(labels_index, return_counts=True)
    q = len(s.qids)
    return TopN(
        query_ids=s.qids,
        query_labels=np.array([s.qmap[int(i)] for i in s.qids], dtype=np.int64),
        neighbour_ids=s.ids,
        neighbour_labels=np.full((q, plan.n), -1, dtype=np.int64),
        similarities=s.scores,
        relevant=s.relevant,
        counts=s.counts,
        query_in_index=np.array([int(i) in s.index for i in s.qids], dtype=bool),
        n=plan.n,
        mode=plan.mode,
        ef_search=plan.ef,
        n_index=len(s.index),
        index_class_sizes={int(a): int(b) for a, b in zip(u, cnt, strict=True)},
        seconds=s.seconds,
    )


def _warnings(t: TopN, summary: metrics.PrecisionSummary) -> list[str]:
    warnings = []
    expected = np.minimum(t.n, t.n_index - t.query_in_index.astype(np.int64))
    short = int((t.counts < expected).sum())
    if short:
        warnings.append(f"{short} queries got fewer than {t.n} results")
    if summary.n_undefined:
        warnings.append(
            f"{summary.n_undefined} queries belong to classes with no index image: left out of P@N"
        )
    return warnings


def _params(ranking: Ranking, plan: _Plan, summary: metrics.PrecisionSummary, explicit_ids: bool) -> dict:
    """The stored run's parameters: the ranking's, the scope's and how it was searched."""
    return {
        **ranking.params(),
        "ns": list(plan.ns),
        "index_splits": [plan.index_split],
        "query_splits": list(plan.query_splits),
        "datasets": list(plan.datasets) if plan.datasets else None,
        "ef_search": plan.ef_search,
        "ef_search_effective": plan.ef,
        "search": plan.search,
        "batch_size": plan.batch_size,
        "explicit_query_ids": explicit_ids,
        "n_undefined_queries": summary.n_undefined,
        "distance": "cosine",
        "similarities": "the ranking's score (fused score, similarity to the expanded query, re-ranked score)",
        "ties": "score, then image_id",
        "sql": "sql/schema/25_fusion.sql",
        "profile": "default",
    }


def _store(
    db: Database,
    ranking: Ranking,
    t: TopN,
    sizes: np.ndarray,
    summary: metrics.PrecisionSummary,
    params: dict[str, Any],
    index_params: dict[str, Any],
    started: datetime,
) -> int:
    """The run, its per-query rows and its P@N metrics in one transaction; returns the run id."""
    t_store = time.perf_counter()
    with db.connection() as conn:
        run_id = runs.insert_run(
            conn, kind="retrieval", model=ranking.name, mode=t.mode, params=params, index_params=index_params
        )
        write_topn(conn, run_id, t, sizes, summary, params["ns"])
        q = len(t.query_ids)
        timings = {
            "topn_s": t.seconds,
            "queries_per_s": q / t.seconds if t.seconds > 0 else None,
            "store_s": time.perf_counter() - t_store,
        }
        runs.finish_run(
            conn,
            run_id,
            n_queries=q,
            n_index=t.n_index,
            metrics=summary.as_dict(),
            total_s=(datetime.now(timezone.utc) - started).total_seconds(),
            timings=timings,
            started_at=started,
        )
    return run_id


def evaluate_ranking(
    db: Database,
    ranking: Ranking,
    *,
    ns: Sequence[int] = metrics.DEFAULT_NS,
    index_split: str = "train",
    query_splits: Sequence[str] = ("test",),
    datasets: Sequence[str] | None = None,
    mode: str = "exact",
    ef_search: int | None = None,
    batch_size: int = 64,
    query_ids: Sequence[int] | None = None,
) -> RankingResult:
    """Evaluate ``ranking`` (see the module docstring) and store it as one retrieval run.

    Steps: check the options, search every query through the SQL API in one snapshot, score P@N as for
    a single model, store the run."""
    plan = _plan(
        db,
        ns=ns,
        index_split=index_split,
        query_splits=query_splits,
        datasets=datasets,
        mode=mode,
        ef_search=ef_search,
        batch_size=batch_size,
    )
    started = datetime.now(timezone.utc)
    searched = _search(db, ranking, plan, query_ids)
    t = _as_topn(searched, plan)
    sizes = np.maximum(t.class_sizes_for(t.query_labels) - t.query_in_index.astype(np.int64), 0)
    summary = metrics.summarise(t.relevant, sizes, t.query_labels, plan.ns)
    params = _params(ranking, plan, summary, query_ids is not None)
    run_id = _store(db, ranking, t, sizes, summary, params, searched.index_params, started)
    return RankingResult(
        ranking=ranking,
        run_id=run_id,
        mode=mode,
        ns=plan.ns,
        summary=summary,
        topn=t,
        n_queries=len(t.query_ids),
        n_index=t.n_index,
        seconds=t.seconds,
        warnings=_warnings(t, summary),
    )
