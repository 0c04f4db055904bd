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
from cbir_pg.eval.retrieval import _check_splits, _index_params
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
    """Evaluate ``ranking`` (see the module docstring) and store it as one retrieval run."""
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
    n = max(ns)
    search = "exact" if mode == "exact" else "auto"
    ef = None
    if mode == "ann":
        ef = min(MAX_EF_SEARCH, max(ef_search or max(DEFAULT_EF_SEARCH, EF_PER_RESULT * n), n))
    stmt, base = ranking.statement(
        n, index_cohort(index_split, ds[0] if ds and len(ds) == 1 else None), search
    )

    started = datetime.now(timezone.utc)
    with db.connection() as conn:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ  # one snapshot for every query
        cur = dict_cursor(conn)
        if ds is not None:
            found = {
                r["key"] for r in cur.execute(queries.get("eval", "dataset_keys"), {"datasets": list(ds)})
            }
            unknown = [d for d in ds if d not in found]
            if unknown:
                raise NotFoundError(f"unknown dataset(s): {', '.join(map(repr, unknown))}")
        index = _images(conn, ranking.models, [index_split], ds)
        candidates = _images(conn, ranking.models, query_splits, ds)
        qmap = {i: lab for i, lab in candidates.items() if lab >= 0}
        if query_ids is not None:
            qmap = {int(i): qmap[int(i)] for i in query_ids if int(i) in qmap}
        qids = np.array(sorted(qmap), dtype=np.int64)
        if not len(qids):
            raise NotFoundError(
                f"no query images: no labelled {'/'.join(query_splits)} images with a vector in every "
                f"model of {ranking.name}"
            )
        if not index:
            raise NotFoundError(f"no index images: no {index_split} images with a vector in every model")
        index_params = {m: _index_params(conn, m) for m in ranking.models}
        if ef is not None:  # transaction-local: the whole evaluation is one read-only transaction
            cur.execute(queries.get("eval", "set_ef_search"), {"value": str(ef)})
        q = len(qids)
        ids = np.full((q, n), -1, dtype=np.int64)
        scores = np.full((q, n), np.nan)
        relevant = np.zeros((q, n), dtype=bool)
        counts = np.zeros(q, dtype=np.int64)
        t0 = time.perf_counter()
        for start in range(0, q, batch_size):
            idx = np.arange(start, min(start + batch_size, q))
            for r in cur.execute(stmt, dict(base, query_ids=qids[idx].tolist())).fetchall():
                i, j = idx[r["ord"] - 1], r["rank"] - 1
                ids[i, j], scores[i, j], relevant[i, j] = r["image_id"], r["score"], r["relevant"]
                counts[i] += 1
        seconds = time.perf_counter() - t0
        conn.rollback()

    labels_index = np.array(list(index.values()), dtype=np.int64)
    u, cnt = np.unique(labels_index, return_counts=True)
    class_sizes = {int(a): int(b) for a, b in zip(u, cnt, strict=True)}
    query_labels = np.array([qmap[int(i)] for i in qids], dtype=np.int64)
    in_index = np.array([int(i) in index for i in qids], dtype=bool)
    t = TopN(
        query_ids=qids,
        query_labels=query_labels,
        neighbour_ids=ids,
        neighbour_labels=np.full((q, n), -1, dtype=np.int64),
        similarities=scores,
        relevant=relevant,
        counts=counts,
        query_in_index=in_index,
        n=n,
        mode=mode,
        ef_search=ef,
        n_index=len(index),
        index_class_sizes=class_sizes,
        seconds=seconds,
    )
    sizes = np.maximum(t.class_sizes_for(query_labels) - in_index.astype(np.int64), 0)
    summary = metrics.summarise(relevant, sizes, query_labels, ns)
    warnings = []
    expected = np.minimum(n, len(index) - in_index.astype(np.int64))
    short = int((counts < expected).sum())
    if short:
        warnings.append(f"{short} queries got fewer than {n} results")
    if summary.n_undefined:
        warnings.append(
            f"{summary.n_undefined} queries belong to classes with no index image: left out of P@N"
        )

    params = {
        **ranking.params(),
        "ns": list(ns),
        "index_splits": [index_split],
        "query_splits": list(query_splits),
        "datasets": list(ds) if ds else None,
        "ef_search": ef_search,
        "ef_search_effective": ef,
        "search": search,
        "batch_size": batch_size,
        "explicit_query_ids": query_ids is not None,
        "n_undefined_queries": summary.n_undefined,
        "distance": "cosine",
        "similarities": "the ranking's score (fused score, similarity to the expanded query, re-ranked score)",
        "ties": "score, then image_id",
        "sql": "sql/schema/25_fusion.sql",
        "profile": "default",
    }
    t_store = time.perf_counter()
    with db.connection() as conn:
        run_id = runs.insert_run(
            conn, kind="retrieval", model=ranking.name, mode=mode, params=params, index_params=index_params
        )
        runs.write_queries(
            conn,
            run_id,
            query_ids=qids,
            labels=query_labels,
            class_index_sizes=sizes,
            neighbour_ids=ids,
            relevant=relevant,
            similarities=scores,
            counts=counts,
        )
        rows: list[runs.Metric] = []
        for j, cut in enumerate(ns):
            rows += [
                runs.Metric("P", cut, "micro", summary.micro[j]),
                runs.Metric("P", cut, "macro", summary.macro[j]),
            ]
        runs.write_metrics(conn, run_id, rows)
        class_rows = [
            runs.ClassMetric(
                int(lab),
                "P",
                cut,
                int(summary.class_n_queries[c]),
                class_sizes.get(int(lab), 0),
                summary.class_means[c, j],
            )
            for c, lab in enumerate(summary.classes)
            if lab >= 0
            for j, cut in enumerate(ns)
        ]
        runs.write_class_metrics(conn, run_id, class_rows)
        timings = {
            "topn_s": seconds,
            "queries_per_s": q / seconds if seconds > 0 else None,
            "store_s": time.perf_counter() - t_store,
        }
        runs.finish_run(
            conn,
            run_id,
            n_queries=q,
            n_index=len(index),
            metrics=summary.as_dict(),
            total_s=(datetime.now(timezone.utc) - started).total_seconds(),
            timings=timings,
            started_at=started,
        )
    return RankingResult(
        ranking=ranking,
        run_id=run_id,
        mode=mode,
        ns=ns,
        summary=summary,
        topn=t,
        n_queries=q,
        n_index=len(index),
        seconds=seconds,
        warnings=warnings,
    )
