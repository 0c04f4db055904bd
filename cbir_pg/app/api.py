"""The Python façade for notebooks and scripts: ``import cbir_pg``, then ``db = cbir_pg.connect()``.

Every method returns a :class:`pandas.DataFrame` (one row per neighbour, per result line, per model), so
results go straight into plots, joins and ``to_csv``. The methods are thin wrappers over the same
library functions the command line calls; docs/python-api.md walks through them.

Importing :mod:`cbir_pg` stays cheap: this module is loaded on first use of :func:`connect` and imports
pandas, torch and the evaluation code only inside the methods that need them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cbir_pg.cohort import Cohort


def connect(dsn: str | None = None) -> Client:
    """A client for ``dsn``; without one, ``CBIR_PG_DSN`` or the embedded server (started on demand)."""
    from cbir_pg.db.database import Database

    db = Database(dsn)
    db.dsn  # resolve now: start the embedded server, or fail here with one line  # noqa: B018
    return Client(db)


class Client:
    """One database (a :class:`cbir_pg.db.database.Database`): search it, evaluate on it, read its
    results. Holds no open connection."""

    def __init__(self, db) -> None:  # noqa: ANN001
        self.db = db
        self._reader = None  # the read-only login's Database, prepared on the first sql()

    @property
    def dsn(self) -> str:
        return self.db.dsn

    def __repr__(self) -> str:
        from cbir_pg.db.connect import redact

        return f"cbir_pg.Client({redact(self.dsn)!r})"

    # ------------------------------------------------------------------ reading
    def sql(self, query: str, params: Mapping[str, Any] | Sequence[Any] | None = None):
        """Run one read-only statement (``%(name)s`` or ``%s`` parameters) and return its rows as a
        DataFrame. It runs with reader privileges, not the owner's: as the ``cbir_analyst`` login
        (SELECT on the cbir and cbir_report schemas) in a read-only transaction, so DDL, writes and
        ``COPY ... TO PROGRAM`` are refused by PostgreSQL itself. To change data, use :meth:`sql_write`."""
        import pandas as pd

        from cbir_pg.db.readonly import reader_database, run_read_only

        if self._reader is None:
            self._reader = reader_database(self.db)
        columns, rows = run_read_only(self._reader, query, params)
        return pd.DataFrame(rows, columns=columns)

    def sql_write(self, query: str, params: Mapping[str, Any] | Sequence[Any] | None = None):
        """Run a statement that CHANGES the database, as the connecting (owner) role, and commit it;
        returns its rows (if any) as a DataFrame. Everything it may do, the owner may do."""
        import pandas as pd

        with self.db.connection() as conn:
            cur = conn.execute(query, params)
            columns = [d.name for d in cur.description] if cur.description else []
            rows = cur.fetchall() if cur.description else []
        return pd.DataFrame(rows, columns=columns)

    def models(self):
        """Models with stored vectors: key, dimension, vectors stored, whether an HNSW index exists."""
        import pandas as pd

        from cbir_pg.index import index_status

        rows = [
            {"model": s.model, "dim": s.dim, "vectors": s.rows, "index": s.index_name, "kind": s.kind}
            for s in index_status(self.db)
        ]
        return pd.DataFrame(rows, columns=["model", "dim", "vectors", "index", "kind"])

    def leaderboard(self):
        """The retrieval leaderboard (``cbir_report.leaderboard``): latest run per model, mode and scope,
        P@N micro and macro, rounded to 4 digits as a dashboard shows them."""
        return self.sql("select * from cbir_report.leaderboard order by model, mode")

    # ------------------------------------------------------------------ search
    def search(
        self,
        image: int | str | os.PathLike,
        model: str,
        k: int = 10,
        *,
        cohort: Cohort | str | None = None,
        ef_search: int | None = None,
        **filters: Any,
    ):
        """The ``k`` most similar images to ``image``: a stored image's id (``int``) or an image file
        (a stored file uses its stored vector; a new one is embedded with the model's stored encoder
        config), among a cohort: ``cohort`` (a :class:`cbir_pg.Cohort`, or a saved cohort's name) and/or
        the keyword filters of :func:`cbir_pg.cohort.as_cohort`: ``split``, ``dataset``, ``modality``,
        ``label``, ``sex``, ``age_min``, ``age_max``, ``exclude_same_patient``, ``same_patient`` (the
        page's and the CLI's). One row per neighbour: rank, image_id, similarity, label, dataset, uri,
        split, modality, patient_id, sex, age."""
        from cbir_pg.search import search_with_query

        by_id = isinstance(image, int) and not isinstance(image, bool)
        _, hits = search_with_query(
            self.db,
            model,
            image_id=int(image) if by_id else None,
            path=None if by_id else Path(image),
            k=k,
            cohort=cohort,
            ef_search=ef_search,
            **filters,
        )
        return _hits_frame(hits)

    def search_text(
        self,
        text: str,
        model: str,
        k: int = 10,
        *,
        cohort: Cohort | str | None = None,
        ef_search: int | None = None,
        **filters: Any,
    ):
        """Text-to-image search (models with a text tower, e.g. ``biomedclip``): the ``k`` images whose
        vectors are nearest to the embedded ``text``, e.g. ``"chest X-ray with pneumonia"``, among the
        cohort as in :meth:`search` (no filter relative to a query patient); the same columns."""
        from cbir_pg.search import search_text

        return _hits_frame(
            search_text(self.db, model, text, k=k, cohort=cohort, ef_search=ef_search, **filters)
        )

    def image_path(self, image_id: int) -> Path:
        """The file of a stored image (its dataset root joined with its uri)."""
        row = self.sql(
            "select d.root, i.uri from cbir.image i join cbir.dataset d on d.id = i.dataset_id where i.id = %s",
            [image_id],
        )
        if row.empty:
            from cbir_pg.errors import NotFoundError

            raise NotFoundError(f"image {image_id} does not exist")
        from cbir_pg.roots import local_root

        root, uri = row.iloc[0]
        root = local_root(root)
        return Path(root) / uri if root else Path(uri)

    # ------------------------------------------------------------------ evaluation
    def evaluate(
        self,
        model: str,
        *,
        ns: Sequence[int] = (1, 3, 5, 10),
        index_splits: Sequence[str] = ("train",),
        query_splits: Sequence[str] = ("test",),
        datasets: Sequence[str] | None = None,
        mode: str = "ann",
        compare_exact: bool = False,
        ef_search: int | None = None,
    ):
        """Run and store the retrieval benchmark (as ``cbir-pg eval retrieval``); one row per run and
        average (micro, macro) with columns ``p1``, ``p3``, ...; with ``compare_exact`` also the ANN
        recall and ΔP@N rows. The stored runs feed :meth:`leaderboard` and the ``cbir_report`` views."""
        import pandas as pd

        from cbir_pg.eval.retrieval import evaluate_retrieval

        r = evaluate_retrieval(
            self.db,
            model,
            ns=ns,
            index_splits=index_splits,
            query_splits=query_splits,
            datasets=datasets,
            mode=mode,
            compare_exact=compare_exact,
            ef_search=ef_search,
            progress=False,
        )
        cols = [f"p{n}" for n in r.ns]
        rows = []
        for m in ("ann", "exact"):
            if m in r.runs:
                run = r.runs[m]
                for avg, values in (("micro", run.summary.micro), ("macro", run.summary.macro)):
                    rows.append([run.run_id, r.model, m, avg, *map(float, values)])
        if r.recall is not None and r.delta_micro is not None and r.delta_macro is not None:
            ann = r.runs["ann"].run_id
            rows.append([ann, r.model, "ann vs exact", "recall", *map(float, r.recall)])
            rows.append([ann, r.model, "ann - exact", "delta micro", *map(float, r.delta_micro)])
            rows.append([ann, r.model, "ann - exact", "delta macro", *map(float, r.delta_macro)])
        return pd.DataFrame(rows, columns=["run_id", "model", "mode", "average", *cols])


def _hits_frame(hits):
    """Search hits as a DataFrame, one column per :class:`cbir_pg.search.Hit` field."""
    import pandas as pd

    from cbir_pg.search import Hit

    return pd.DataFrame([asdict(h) for h in hits], columns=list(Hit.__dataclass_fields__))
