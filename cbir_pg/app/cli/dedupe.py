"""``cbir-pg datasets dedupe``: near-duplicate pairs across splits (the pairs that can inflate P@1)."""

from __future__ import annotations

import typer

from cbir_pg.app.cli._common import database, names_or_all
from cbir_pg.app.cli.options import Datasets
from cbir_pg.app.cli.output import Col, Format, emit, format_option, say


def dedupe(
    ctx: typer.Context,
    dataset: Datasets = None,
    threshold: int = typer.Option(
        None, "--threshold", "-t", help="Hamming distance of the 64-bit pHashes [the import's, 4]"
    ),
    include_excluded: bool = typer.Option(
        False, "--all", help="also pairs with an image already excluded (e.g. flagged as a duplicate)"
    ),
    limit: int = typer.Option(50, "--limit", help="pairs listed in the table (all in json/csv)"),
    fmt: Format = format_option(),
) -> None:
    """List near-duplicate image pairs (perceptual hashes within a Hamming distance) that lie in different splits of one dataset."""
    from cbir_pg.datasets.dedupe import cross_split_pairs
    from cbir_pg.datasets.neardup import DEFAULT_THRESHOLD

    t = DEFAULT_THRESHOLD if threshold is None else threshold
    with database(ctx).connection(vector=False) as conn:
        pairs = cross_split_pairs(conn, names_or_all(dataset), t, include_excluded)
    counts: dict[tuple[str, str, str], int] = {}
    for p in pairs:
        key = (p.dataset, p.split_a, p.split_b)
        counts[key] = counts.get(key, 0) + 1
    say(
        f"{len(pairs)} cross-split near-duplicate pairs within {t} bits"
        + (" (non-excluded images)" if not include_excluded else "")
        + (": " + ", ".join(f"{d} {a}-{b} {n}" for (d, a, b), n in sorted(counts.items())) if counts else ""),
        fmt,
    )
    cols = [
        Col("dataset"),
        Col("distance", right=True),
        Col("image_a", right=True),
        Col("split_a"),
        Col("uri_a"),
        Col("image_b", right=True),
        Col("split_b"),
        Col("uri_b"),
    ]
    shown = pairs if fmt != Format.table else pairs[:limit]
    notes = [f"... {len(pairs) - limit} more (--limit, or --format csv)"] if len(shown) < len(pairs) else []
    emit(shown, cols, fmt, notes=notes)


def register_datasets(datasets_app: typer.Typer) -> None:
    datasets_app.command("dedupe")(dedupe)
