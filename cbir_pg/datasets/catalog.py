"""What is in the database: per-dataset counts (``cbir-pg datasets list``) and the harmonised
classes (``cbir-pg labels list``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from cbir_pg.datasets.loader import q

if TYPE_CHECKING:
    from cbir_pg.db.database import Database


@dataclass
class DatasetOverview:
    key: str
    kind: str
    name: str
    root: str | None
    imported_at: datetime | None
    images: int
    excluded: int
    patients: int
    errors: int
    splits: dict[str, int] = field(default_factory=dict)
    labels: dict[str, int] = field(default_factory=dict)
    exclusions: dict[str, int] = field(default_factory=dict)
    #: 'importing' while an import run has not finished (a killed import stays so until a rerun completes)
    import_status: str = "complete"


@dataclass
class LabelOverview:
    key: str
    modality: str
    region: str
    finding: str
    kind: str
    kind_overridden: bool
    images: int
    benchmark: int
    datasets: list[str]


def dataset_overview(db: Database) -> list[DatasetOverview]:
    """Every dataset with its image counts by split, by benchmark label and by exclusion reason."""
    fields = (
        "key",
        "kind",
        "name",
        "root",
        "imported_at",
        "images",
        "excluded",
        "patients",
        "errors",
        "import_status",
    )
    with db.connection(vector=False) as conn:
        out: dict[int, DatasetOverview] = {}
        for r in conn.execute(q("list_datasets")).fetchall():
            out[r["id"]] = DatasetOverview(**{f: r[f] for f in fields})
        for r in conn.execute(q("dataset_split_counts")).fetchall():
            out[r["dataset_id"]].splits[r["split"]] = int(r["images"])
        for r in conn.execute(q("dataset_label_counts")).fetchall():
            out[r["dataset_id"]].labels[r["label"]] = int(r["images"])
        for r in conn.execute(q("dataset_exclusion_counts")).fetchall():
            out[r["dataset_id"]].exclusions[r["exclusion_reason"]] = int(r["images"])
    return list(out.values())


def label_overview(db: Database) -> list[LabelOverview]:
    """Every harmonised class with modality, region, kind and its image counts."""
    with db.connection(vector=False) as conn:
        rows = conn.execute(q("list_labels")).fetchall()
    return [
        LabelOverview(
            r["key"],
            r["modality"],
            r["region"],
            r["finding"],
            r["kind"],
            bool(r["kind_overridden"]),
            int(r["images"]),
            int(r["benchmark"]),
            list(r["datasets"]),
        )
        for r in rows
    ]


def unknown_datasets_error(conn, unknown: list[str]):
    """The error for dataset keys that are not in the database: names the ones that are, and the close
    one for a typo (``unknown dataset(s): 'nih14'; known: breastmnist, pneumoniamnist``)."""
    from psycopg.rows import dict_row

    from cbir_pg.errors import NotFoundError
    from cbir_pg.registry import did_you_mean

    with conn.cursor(row_factory=dict_row) as cur:
        known = [r["key"] for r in cur.execute(q("dataset_keys")).fetchall()]
    hint = did_you_mean(unknown[0], known) if len(unknown) == 1 else ""
    names = ", ".join(known) if known else "none yet (cbir-pg datasets import, or cbir-pg demo)"
    return NotFoundError(f"unknown dataset(s): {', '.join(map(repr, unknown))}{hint}; known: {names}")


def check_known_datasets(conn, datasets) -> None:
    """Raise :func:`unknown_datasets_error` when any of ``datasets`` (``None`` or empty: all, nothing to
    check) is not in the database."""
    if not datasets:
        return
    from psycopg.rows import dict_row

    with conn.cursor(row_factory=dict_row) as cur:
        known = {r["key"] for r in cur.execute(q("dataset_keys")).fetchall()}
    unknown = [d for d in datasets if d not in known]
    if unknown:
        raise unknown_datasets_error(conn, unknown)
