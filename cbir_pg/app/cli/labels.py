"""``cbir-pg labels``: the harmonised classes."""

from __future__ import annotations

from pathlib import Path

import typer

from cbir_pg.app.cli._common import database
from cbir_pg.app.cli.output import Col, Format, emit, format_option, print_line

app = typer.Typer(help="Labels: the harmonised classes <MODALITY>/<region>/<finding>.", no_args_is_help=True)


@app.command("list")
def list_(ctx: typer.Context, fmt: Format = format_option()) -> None:
    """Every harmonised class with modality, region, kind (anatomical or pathological) and counts."""
    from cbir_pg.datasets import label_overview

    cols = [
        Col("label", lambda r: r.key),
        Col("modality"),
        Col("region"),
        Col("kind", lambda r: r.kind + (" (set)" if r.kind_overridden else "")),
        Col("images", right=True),
        Col("benchmark", right=True),
        Col("datasets", lambda r: list(r.datasets)),
    ]
    emit(
        label_overview(database(ctx)),
        cols,
        fmt,
        empty="no labels yet: import a dataset first",
        notes=["images: every image with the label; benchmark: single-label images not excluded"],
    )


@app.command()
def attach(
    ctx: typer.Context,
    csv_file: Path = typer.Argument(
        ..., help="CSV: sop_instance_uid (or series_/study_instance_uid) and label"
    ),
    dataset: str = typer.Option(..., "--dataset", "-d", help="the dataset the UIDs belong to, e.g. pacs"),
) -> None:
    """Attach labels to images imported from a PACS (by SOP, series or study UID), e.g. to evaluate on them."""
    from cbir_pg.pacs.labels import attach_labels

    s = attach_labels(database(ctx), dataset, csv_file)
    by = ", ".join(f"{k} {v}" for k, v in sorted(s.labels.items())) or "none"
    print_line(
        f"{s.dataset}: {s.images} images labelled by {s.level} UID ({by}); "
        f"{s.unmatched} of {s.rows} CSV rows matched no image"
    )


def register(app_: typer.Typer) -> None:
    app_.add_typer(app, name="labels")
