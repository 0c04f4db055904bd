"""What an evaluation run may use, and what it records about it.

* A dataset whose import has not finished (``cbir.dataset.import_status = 'importing'``: a killed or
  running import, possibly partial and not yet deduplicated) is refused with an error naming it, until
  a rerun of the import completes. Without this, a run over half a dataset silently became the latest
  leaderboard row.
* The index side of a ranking evaluated through the SQL API (fusion, expansion, re-ranking) is a
  :class:`~cbir_pg.cohort.Cohort` (:func:`index_cohort`), the same value a search takes; a retrieval
  run's index set can be narrowed by one too (:class:`cbir_pg.eval.topn.IndexFilter` ``cohort``).
* Each stored run records in ``cbir.eval_run.all_embedded`` whether every non-excluded image of its
  datasets and splits had a vector of the model when it ran (images whose ingest failed or is still
  pending are left out of the run, so its numbers describe a subset). The value is written with the
  run by :func:`cbir_pg.eval.runs.insert_run` (``all_embedded=``).
* **One scope per image set.** A run records in ``params.scope_datasets`` the datasets it really covers
  (:func:`scope_datasets`): the requested ones, or every dataset when none was named, that have
  non-excluded images in its splits, sorted. The ``scope`` column of ``cbir_report.eval_runs`` (and so
  the leaderboard, ``eval show``, the page and BI) is built from it, so ``evaluate(model)`` over "all" and
  the demo's ``breastmnist,pneumoniamnist`` over the same images are one scope, one leaderboard row.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import psycopg

from cbir_pg.cohort import Cohort
from cbir_pg.db import identifiers, queries
from cbir_pg.db.database import dict_cursor, scalar
from cbir_pg.errors import ConfigError

if TYPE_CHECKING:
    from cbir_pg.db.database import Database


def check_scope(
    conn: psycopg.Connection, model: str, datasets: Sequence[str] | None, splits: Sequence[str] | None
) -> bool:
    """Refuse unfinished datasets in scope (:class:`ConfigError` naming them); return whether every
    image in scope has a vector of ``model`` (whose embeddings must exist)."""
    from cbir_pg.eval.data import check_model

    check_model(conn, model)
    ds = list(datasets) if datasets else None
    unfinished = [
        r["key"]
        for r in dict_cursor(conn).execute(queries.get("eval", "unfinished_datasets"), {"datasets": ds})
    ]
    if unfinished:
        raise ConfigError(
            f"dataset(s) {', '.join(unfinished)} not completely imported (the last import did not finish):"
            " rerun cbir-pg datasets import for them before evaluating"
        )
    # the images of the scope without a vector: ingest's count of what is left, failures not counted out
    q = queries.get("ingest", "count_todo", table=identifiers.embedding_table(model))
    scope = {"datasets": ds, "splits": list(splits) if splits else None}
    missing = scalar(conn, q, {**scope, "encoder": model, "max_attempts": None})
    return int(missing) == 0


#: the run parameters that name splits (retrieval, fusion, ablation, kNN, linear probe, zero-shot)
SPLIT_PARAMS = (
    "index_splits",
    "query_splits",
    "query_split",
    "split",
    "splits",
    "train_split",
    "val_split",
    "test_split",
)


def splits_of(params: dict) -> list[str] | None:
    """Every split a run's parameters name (``None``: none named, i.e. all)."""
    out: list[str] = []
    for key in SPLIT_PARAMS:
        v = params.get(key)
        for s in v if isinstance(v, list | tuple) else [v]:
            if isinstance(s, str) and s not in out:
                out.append(s)
    return out or None


def scope_datasets(
    conn: psycopg.Connection, datasets: Sequence[str] | None, splits: Sequence[str] | None
) -> list[str]:
    """The datasets a run covers, canonical: of ``datasets`` (all when ``None``) those with non-excluded
    images in ``splits`` (all when ``None``), sorted, so that the same image sets give the same scope."""
    rows = dict_cursor(conn).execute(
        queries.get("eval", "scope_datasets"),
        {"datasets": list(datasets) if datasets else None, "splits": list(splits) if splits else None},
    )
    return [r["key"] for r in rows]


def check(db: Database, model: str, datasets: Sequence[str] | None, splits: Sequence[str] | None) -> bool:
    """:func:`check_scope` on a connection of its own."""
    with db.connection() as conn:
        return check_scope(conn, model, datasets, splits)


def index_cohort(split: str, dataset: str | None = None, base: Cohort | None = None) -> Cohort:
    """The images an evaluated ranking searches, as a cohort: one split, one dataset or all, within
    ``base`` (e.g. a saved cohort) when given."""
    return (base or Cohort()).with_(split=split, dataset=dataset)
