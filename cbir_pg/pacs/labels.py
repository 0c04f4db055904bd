"""``cbir-pg labels attach CSV --dataset KEY``: give images from a PACS their labels after the import.

A PACS holds no benchmark labels: its images are imported unlabelled (searchable, left out of
evaluation, which needs a label). A CSV with a UID column and a ``label`` column (a harmonised key
``MODALITY/region/finding``) attaches them later; the UID column names the level:

=======================  ===============================================
``sop_instance_uid``     one image
``series_instance_uid``  every image of the series
``study_instance_uid``   every image of the study
=======================  ===============================================

An image's label is replaced (its ``cbir.image.label_id`` and ``cbir.image_label`` rows), in one
transaction; rows that match no image are counted and reported, never an error. Running it again with
the same file changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from cbir_pg.db import queries
from cbir_pg.errors import ConfigError, NotFoundError

LEVELS = {"sop_instance_uid": "sop", "series_instance_uid": "series", "study_instance_uid": "study"}


@dataclass
class AttachSummary:
    dataset: str
    level: str
    rows: int = 0
    images: int = 0
    unmatched: int = 0
    labels: dict[str, int] = field(default_factory=dict)


def read_mapping(path: Path) -> tuple[str, dict[str, str]]:
    """``(level, {uid: label key})`` from the CSV; conflicting labels for one UID are an error."""
    from cbir_pg.datasets.base import read_csv
    from cbir_pg.datasets.harmonise import parse_label_key

    rows = list(read_csv(Path(path), ("label",)))
    cols = set(rows[0][1]) if rows else set()
    level_cols = [c for c in LEVELS if c in cols]
    if len(level_cols) != 1:
        raise ConfigError(f"{path}: needs exactly one of the columns {', '.join(LEVELS)} besides label")
    col = level_cols[0]
    out: dict[str, str] = {}
    for line, row in rows:
        uid, raw = (row.get(col) or "").strip(), (row.get("label") or "").strip()
        if not uid or not raw:
            raise ConfigError(f"{path}:{line}: empty {col} or label")
        try:
            key = parse_label_key(raw).key
        except Exception as exc:
            raise ConfigError(f"{path}:{line}: {exc}") from None
        if out.get(uid, key) != key:
            raise ConfigError(f"{path}:{line}: {uid} has two labels ({out[uid]} and {key})")
        out[uid] = key
    return LEVELS[col], out


def attach_labels(db, dataset: str, path: str | Path) -> AttachSummary:
    """Attach the labels of the CSV at ``path`` to the images of ``dataset`` (see the module docstring)."""
    from cbir_pg.datasets.loader import ensure_label

    level, mapping = read_mapping(Path(path))
    summary = AttachSummary(dataset, level, rows=len(mapping))
    with db.connection() as conn:
        row = conn.execute(queries.get("datasets", "get_dataset"), {"key": dataset}).fetchone()
        if row is None:
            raise NotFoundError(f"unknown dataset {dataset!r} (see: cbir-pg datasets list)")
        ids = {key: ensure_label(conn, key) for key in sorted(set(mapping.values()))}
        conn.execute(queries.get("pacs", "attach_stage"))
        with conn.cursor() as cur, cur.copy("copy attach_stage (uid, label_id) from stdin") as cp:
            for uid, key in mapping.items():
                cp.write_row((uid, ids[key]))
        p = {"dataset_id": row["id"], "level": level}
        conn.execute(queries.get("pacs", "attach_delete"), p)
        conn.execute(queries.get("pacs", "attach_insert"), p)
        for r in conn.execute(queries.get("pacs", "attach_update"), p).fetchall():
            summary.images += r["images"]
            summary.labels[r["label"]] = r["images"]
        summary.unmatched = conn.execute(queries.get("pacs", "attach_unmatched"), p).fetchone()["n"]
    return summary
