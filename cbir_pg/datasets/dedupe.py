"""Duplicate detection within a dataset, recomputed deterministically after every import.

* **Exact duplicates**: images whose decoded pixels hash the same (``image.content_hash``, sha256 of
  the pixels and shape from :func:`cbir_pg.images.pixel_hash`; the file format does not matter).
* **Near duplicates**: images whose 64-bit perceptual hash (``image.phash``, ImageHash's pHash of the
  greyscale image) is identical, after exact duplicates are out. Equality (Hamming distance 0) keeps
  the check one indexed ``group by`` that scales to millions of rows.

In each group one image is kept: the one in the held-out split first (``test``, then ``val``, then
``train``), then the smallest ``uri``. The others stay in the table, flagged ``excluded`` with
reason ``duplicate`` or ``near_duplicate`` and ``duplicate_of`` pointing at the kept image. The
choice depends only on splits and paths, never on insertion order, so it is reproducible, and
re-running it (as every import does) gives the same flags. Images already excluded for another
reason (multi-label, uncertain, no label) take no part. Only images within one dataset are compared.
"""

from __future__ import annotations

from dataclasses import dataclass

from cbir_pg.datasets.loader import q


@dataclass
class DedupeResult:
    exact: int
    near: int


def mark_duplicates(conn, dataset_id: int, near: bool = True, mode: str = "near") -> DedupeResult:
    """Reset and recompute the duplicate flags of one dataset in one transaction.

    ``mode``: ``near`` (exact, then perceptual when ``near``), ``exact`` (pixel-identical only) or
    ``none`` (flags only cleared: the paper profile, whose published splits were deduplicated upstream).
    """
    params = {"dataset_id": dataset_id}
    near = near and mode == "near"
    try:
        conn.execute(q("reset_duplicates"), params)
        if mode == "none":
            conn.commit()
            return DedupeResult(exact=0, near=0)
        exact = conn.execute(q("mark_exact_duplicates"), params).rowcount
        n_near = conn.execute(q("mark_near_duplicates"), params).rowcount if near else 0
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    return DedupeResult(exact=max(exact, 0), near=max(n_near, 0))
