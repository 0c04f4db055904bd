"""``cbir-pg ingest status``: exact counts per encoder and dataset from the view ``cbir.ingest_status``."""

from __future__ import annotations

from dataclasses import dataclass

from cbir_pg.db import queries
from cbir_pg.db.database import Database


@dataclass(frozen=True)
class IngestStatusRow:
    encoder: str
    dataset: str
    total: int
    done: int
    pending: int
    failed: int


def ingest_status(db: Database, model: str | None = None) -> list[IngestStatusRow]:
    """Exact done/pending/failed counts per encoder and dataset (view ``cbir.ingest_status``)."""
    if model is not None:
        from cbir_pg.db.identifiers import check_key

        check_key(model)
    from psycopg.rows import class_row

    with db.connection() as conn, conn.cursor(row_factory=class_row(IngestStatusRow)) as cur:
        return cur.execute(queries.get("ingest", "status"), {"encoder": model}).fetchall()
