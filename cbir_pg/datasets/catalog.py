"""What is in the database: per-dataset counts (``cbir-pg datasets list``) and the harmonised
classes (``cbir-pg labels list``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from cbir_pg.datasets.loader import q


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


def dataset_overview(dsn: str) -> list[DatasetOverview]:
    """Every dataset with its image counts by split, by benchmark label and by exclusion reason."""
    from cbir_pg.db.connect import connection

    with connection(dsn, vector=False) as conn:
        out: dict[int, DatasetOverview] = {}
        for r in conn.execute(q("list_datasets")).fetchall():
            out[r[0]] = DatasetOverview(
                r[1], r[2], r[3], r[4], r[5], int(r[6]), int(r[7]), int(r[8]), int(r[9]), import_status=r[10]
            )
        for ds, split, n, _ in conn.execute(q("dataset_split_counts")).fetchall():
            out[ds].splits[split] = int(n)
        for ds, label, n, _ in conn.execute(q("dataset_label_counts")).fetchall():
            out[ds].labels[label] = int(n)
        for ds, reason, n in conn.execute(q("dataset_exclusion_counts")).fetchall():
            out[ds].exclusions[reason] = int(n)
    return list(out.values())


def label_overview(dsn: str) -> list[LabelOverview]:
    """Every harmonised class with modality, region, kind and its image counts."""
    from cbir_pg.db.connect import connection

    with connection(dsn, vector=False) as conn:
        rows = conn.execute(q("list_labels")).fetchall()
    return [
        LabelOverview(r[1], r[2], r[3], r[4], r[5], bool(r[6]), int(r[7]), int(r[8]), list(r[9]))
        for r in rows
    ]
