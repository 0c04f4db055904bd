"""Duplicate detection within a dataset, recomputed deterministically after every import.

* **Exact duplicates**: images whose decoded pixels hash the same (``image.content_hash``, sha256 of
  the pixels and shape from :func:`cbir_pg.images.pixel_hash`; the file format does not matter).
* **Near duplicates**: images whose 64-bit perceptual hashes (``image.phash``, ImageHash's pHash of the
  greyscale image) lie within :data:`cbir_pg.datasets.neardup.DEFAULT_THRESHOLD` bits (Hamming
  distance), after exact duplicates are out: the same scan resized, re-encoded or slightly cropped
  (threshold measured, docs/datasets.md). Pairs come from a multi-index hash
  (:func:`cbir_pg.datasets.neardup.hamming_pairs`), fast at a million images.

In each group one image is kept: the one in the held-out split first (``test``, then ``val``, then
``train``), then the smallest ``uri`` (for near duplicates: walking the images in that order, an image
is flagged when a near neighbour earlier in the order was kept). The others stay in the table, flagged
``excluded`` with reason ``duplicate`` or ``near_duplicate`` and ``duplicate_of`` pointing at the kept
image. The choice depends only on splits and paths, never on insertion order, so it is reproducible,
and re-running it (as every import does) gives the same flags. Images already excluded for another
reason (multi-label, uncertain, no label) take no part. Only images within one dataset are compared.

The profiles choose the rule: ``default`` flags exact and near duplicates (``near``); ``exact`` flags
pixel-identical images only; the paper profile flags none (its published splits were deduplicated
upstream). :func:`cross_split_pairs` lists the near-duplicate pairs that remain *across splits* among
non-excluded images (``cbir-pg datasets dedupe`` and the report): with ``exact`` or ``none`` these are
the pairs that can inflate P@1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cbir_pg.datasets.loader import q
from cbir_pg.datasets.neardup import (
    DEFAULT_THRESHOLD,
    SPLIT_RANK,
    NearPair,
    check_threshold,
    hamming_pairs,
    keep_first,
    parse_hashes,
)
from cbir_pg.db.database import dict_cursor


@dataclass
class DedupeResult:
    exact: int
    near: int


def mark_duplicates(
    conn, dataset_id: int, near: bool = True, mode: str = "near", threshold: int = DEFAULT_THRESHOLD
) -> DedupeResult:
    """Reset and recompute the duplicate flags of one dataset in one transaction.

    ``mode``: ``near`` (exact, then perceptual within ``threshold`` bits when ``near``), ``exact``
    (pixel-identical only) or ``none`` (flags only cleared: the paper profile, whose published splits
    were deduplicated upstream).
    """
    params = {"dataset_id": dataset_id}
    near = near and mode == "near"
    try:
        conn.execute(q("reset_duplicates"), params)
        if mode == "none":
            conn.commit()
            return DedupeResult(exact=0, near=0)
        exact = conn.execute(q("mark_exact_duplicates"), params).rowcount
        n_near = _mark_near(conn, dataset_id, check_threshold(threshold)) if near else 0
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    return DedupeResult(exact=max(exact, 0), near=n_near)


def _mark_near(conn, dataset_id: int, threshold: int) -> int:
    rows = dict_cursor(conn).execute(q("near_candidates"), {"dataset_id": dataset_id}).fetchall()
    if len(rows) < 2:
        return 0
    i, j, _ = hamming_pairs(parse_hashes([r["phash"] for r in rows]), threshold)
    keys = [(SPLIT_RANK.get(r["split"], 3), r["uri"]) for r in rows]
    flagged = keep_first(keys, i, j)
    if not flagged:
        return 0
    ids = [rows[p]["id"] for p in flagged]
    keep = [rows[k]["id"] for k in flagged.values()]
    conn.execute(q("mark_near_duplicates"), {"ids": ids, "keep_ids": keep})
    return len(ids)


def cross_split_pairs(
    conn,
    datasets: Sequence[str] | None = None,
    threshold: int = DEFAULT_THRESHOLD,
    include_excluded: bool = False,
) -> list[NearPair]:
    """Near-duplicate pairs (pHash within ``threshold`` bits) whose two images lie in different splits
    of the same dataset, among non-excluded images (all with ``include_excluded``); sorted by dataset,
    distance, then image ids. Such a pair lets a test query find its own scan in the train index."""
    t = check_threshold(threshold)
    from cbir_pg.datasets.catalog import check_known_datasets

    check_known_datasets(conn, datasets)
    rows = (
        dict_cursor(conn)
        .execute(
            q("cross_split_candidates"),
            {"datasets": list(datasets) if datasets else None, "all": include_excluded},
        )
        .fetchall()
    )
    out: list[NearPair] = []
    by_ds: dict[str, list] = {}
    for r in rows:
        by_ds.setdefault(r["dataset"], []).append(r)
    for ds, rs in by_ds.items():
        i, j, d = hamming_pairs(parse_hashes([r["phash"] for r in rs]), t)
        for a, b, dist in zip(i.tolist(), j.tolist(), d.tolist(), strict=True):
            ra, rb = rs[a], rs[b]
            if ra["split"] == rb["split"]:
                continue
            if SPLIT_RANK.get(ra["split"], 3) > SPLIT_RANK.get(rb["split"], 3):
                ra, rb = rb, ra  # the held-out image first
            out.append(NearPair(ds, ra["id"], ra["uri"], ra["split"], rb["id"], rb["uri"], rb["split"], dist))
    out.sort(key=lambda p: (p.dataset, p.distance, p.image_a, p.image_b))
    return out
