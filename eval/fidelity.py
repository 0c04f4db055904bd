"""The report's fidelity sections: the paper's numbers beside ours (:mod:`cbir_pg.eval.paper`),
near-duplicate pairs across splits (:func:`cbir_pg.datasets.dedupe.cross_split_pairs`) and images
whose pixels are not on this machine (``--metadata-only`` imports)."""

from __future__ import annotations

import html

import psycopg

from cbir_pg.db import queries
from cbir_pg.db.database import scalar


def near_duplicate_section(conn: psycopg.Connection) -> str | None:
    """Cross-split near-duplicate pairs among non-excluded images, per dataset and split pair (HTML);
    ``None`` when no image has a perceptual hash."""
    from cbir_pg.datasets.dedupe import cross_split_pairs
    from cbir_pg.datasets.neardup import DEFAULT_THRESHOLD

    if not scalar(conn, queries.get("paper", "any_phash")):
        return None
    pairs = cross_split_pairs(conn, None, DEFAULT_THRESHOLD)
    counts: dict[tuple[str, str, str], int] = {}
    for p in pairs:
        counts[(p.dataset, p.split_a, p.split_b)] = counts.get((p.dataset, p.split_a, p.split_b), 0) + 1
    rows = "".join(
        f"<tr><td>{html.escape(d)}</td><td>{a}</td><td>{b}</td><td>{n}</td></tr>"
        for (d, a, b), n in sorted(counts.items())
    )
    table = (
        f"<table><tr><th>dataset</th><th>split</th><th>split</th><th>pairs</th></tr>{rows}</table>"
        if rows
        else ""
    )
    return (
        "<h2>Near duplicates across splits</h2>"
        + (
            table
            or f"<p>No pair of non-excluded images in different splits lies within {DEFAULT_THRESHOLD} bits.</p>"
        )
        + f"<p class='note'>64-bit pHash, Hamming distance &le; {DEFAULT_THRESHOLD} (docs/datasets.md); such a pair"
        " lets a query find its own scan in the index. List them: cbir-pg datasets dedupe.</p>"
    )


def report_sections(conn: psycopg.Connection) -> list[str]:
    from cbir_pg.eval.paper import report_section

    out = [s for s in (report_section(conn), near_duplicate_section(conn)) if s]
    n = scalar(conn, queries.get("paper", "images_without_pixels"))
    if n:
        out.append(
            f"<p class='note'>{n} images were imported with --metadata-only: pixels not available on this "
            "machine (grids show a grey tile); their P@N is computed from labels, splits and vectors.</p>"
        )
    return out
