"""The bulk loader: COPY a batch into a temporary staging table, then move it into the real tables.

One batch is one transaction: ``COPY import_stage FROM STDIN``, then patients, studies, images
(``insert ... on conflict (dataset_id, uri) do nothing``) and image labels are inserted from the
stage, and the commit empties the stage (``on commit delete rows``). A crash loses at most the open
batch; re-running the import picks up where it stopped, since rows already present are skipped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cbir_pg.db import queries

COLUMNS = (
    "ord",
    "uri",
    "patient_key",
    "sex",
    "age",
    "study_key",
    "content_hash",
    "phash",
    "size_bytes",
    "width",
    "height",
    "modality",
    "body_region",
    "view",
    "split",
    "label_id",
    "label_ids",
    "source_labels",
    "excluded",
    "exclusion_reason",
    "extra",
)
TYPES = (
    "int4",
    "text",
    "text",
    "text",
    "float4",
    "text",
    "text",
    "text",
    "int8",
    "int4",
    "int4",
    "text",
    "text",
    "text",
    "text",
    "int4",
    "int4[]",
    "jsonb",
    "bool",
    "text",
    "jsonb",
)


@dataclass
class StageRow:
    uri: str
    patient_key: str | None = None
    sex: str | None = None
    age: float | None = None
    study_key: str | None = None
    content_hash: str | None = None
    phash: str | None = None
    size_bytes: int | None = None
    width: int | None = None
    height: int | None = None
    modality: str | None = None
    body_region: str | None = None
    view: str | None = None
    split: str | None = None
    label_id: int | None = None
    label_ids: list[int] = field(default_factory=list)
    source_labels: Any = field(default_factory=dict)
    excluded: bool = False
    exclusion_reason: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def q(name: str):
    return queries.get("datasets", name)


def ensure_label(conn, key: str, kind: str | None = None) -> int:
    """The id of the harmonised label ``key`` (``MODALITY/region/finding``), its ``cbir.label`` row
    created when new with ``kind`` (default: derived from the key); an existing row is left as it is."""
    from cbir_pg.datasets.harmonise import derive_kind, parse_label_key
    from cbir_pg.db.database import scalar

    lk = parse_label_key(key)
    params = {"key": lk.key, "modality": lk.modality, "region": lk.region, "finding": lk.finding}
    conn.execute(q("ensure_label"), {**params, "kind": kind or derive_kind(lk)})
    return scalar(conn, q("label_id"), {"key": lk.key})


class BulkLoader:
    """Loads batches of :class:`StageRow` for one dataset over one connection (not autocommit)."""

    def __init__(self, conn, dataset_id: int):
        self.conn = conn
        self.dataset_id = dataset_id
        conn.execute(q("create_stage"))
        conn.commit()

    def existing(self, uris: list[str], since) -> dict[str, bool]:
        """``{uri: inserted by this run}`` for the uris of a batch already in the dataset."""
        rows = self.conn.execute(
            q("existing_uris"), {"dataset_id": self.dataset_id, "uris": uris, "since": since}
        ).fetchall()
        self.conn.commit()
        return {r["uri"]: bool(r["this_run"]) for r in rows}

    def load(self, rows: list[StageRow]) -> int:
        """COPY ``rows`` and insert them; returns how many images were new. One transaction."""
        if not rows:
            return 0
        params = {"dataset_id": self.dataset_id}
        try:
            with self.conn.cursor() as cur:
                with cur.copy(q("copy_stage")) as cp:
                    cp.set_types(list(TYPES))
                    for i, r in enumerate(rows):
                        cp.write_row(
                            (
                                i,
                                r.uri,
                                r.patient_key,
                                r.sex,
                                r.age,
                                r.study_key,
                                r.content_hash,
                                r.phash,
                                r.size_bytes,
                                r.width,
                                r.height,
                                r.modality,
                                r.body_region,
                                r.view,
                                r.split,
                                r.label_id,
                                r.label_ids,
                                r.source_labels,
                                r.excluded,
                                r.exclusion_reason,
                                r.extra,
                            )
                        )
                cur.execute(q("stage_patients"), params)
                cur.execute(q("stage_studies"), params)
                ids = [row["id"] for row in cur.execute(q("stage_images"), params).fetchall()]
                if ids:
                    cur.execute(q("stage_image_labels"), {**params, "ids": ids})
            self.conn.commit()
        except BaseException:
            self.conn.rollback()
            raise
        return len(ids)
