"""``cbir-pg labels``: the harmonised classes."""

from __future__ import annotations

import typer

from cbir_pg.app.cli._common import database
from cbir_pg.app.cli.output import Col, Format, emit, format_option

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


def register(app_: typer.Typer) -> None:
    app_.add_typer(app, name="labels")
