"""What an evaluation run may use, and what it records about it.

* A dataset whose import has not finished (``cbir.dataset.import_status = 'importing'``: a killed or
  running import, possibly partial and not yet deduplicated) is refused with an error naming it, until
  a rerun of the import completes. Without this, a run over half a dataset silently became the latest
  leaderboard row.
* Each stored run records in ``cbir.eval_run.all_embedded`` whether every non-excluded image of its
  datasets and splits had a vector of the model when it ran (images whose ingest failed or is still
  pending are left out of the run, so its numbers describe a subset).
"""

from __future__ import annotations

from collections.abc import Sequence

from cbir_pg.db import identifiers, queries
from cbir_pg.errors import ConfigError


def check_scope(conn, model: str, datasets: Sequence[str] | None, splits: Sequence[str] | None) -> bool:
    """Refuse unfinished datasets in scope (:class:`ConfigError` naming them); return whether every
    image in scope has a vector of ``model``."""
    ds = list(datasets) if datasets else None
    unfinished = [r[0] for r in conn.execute(queries.get("eval", "unfinished_datasets"), {"datasets": ds})]
    if unfinished:
        raise ConfigError(
            f"dataset(s) {', '.join(unfinished)} not completely imported (the last import did not finish):"
            " rerun cbir-pg datasets import for them before evaluating"
        )
    q = queries.get("eval", "scope_without_vector", table=identifiers.embedding_table(model))
    missing = conn.execute(q, {"datasets": ds, "splits": list(splits) if splits else None}).fetchone()[0]
    conn.rollback()
    return int(missing) == 0


def check_scope_dsn(dsn: str, model: str, datasets, splits) -> bool:
    from cbir_pg.db.connect import connection

    with connection(dsn) as conn:
        return check_scope(conn, model, datasets, splits)


def record_coverage(conn, run_id: int, all_embedded: bool) -> None:
    """Store ``all_embedded`` on the run (in the caller's transaction)."""
    conn.execute(queries.get("eval", "set_run_coverage"), {"run_id": run_id, "all_embedded": all_embedded})


def record_coverage_dsn(dsn: str, run_id: int | None, all_embedded: bool) -> None:
    if run_id is None:
        return
    from cbir_pg.db.connect import connection

    with connection(dsn) as conn:
        record_coverage(conn, run_id, all_embedded)
        conn.commit()
