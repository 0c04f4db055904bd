"""``cbir-pg labels``: the harmonised classes."""

from __future__ import annotations

import typer

from cbir_pg.app.cli._common import console, database

app = typer.Typer(help="Labels: the harmonised classes <MODALITY>/<region>/<finding>.", no_args_is_help=True)


@app.command("list")
def list_(ctx: typer.Context) -> None:
    """Every harmonised class with modality, region, kind (anatomical or pathological) and counts."""
    from rich.table import Table

    from cbir_pg.datasets import label_overview

    rows = label_overview(database(ctx))
    if not rows:
        console.print("no labels yet: import a dataset first")
        return
    t = Table()
    for col in ("label", "modality", "region", "kind", "images", "benchmark", "datasets"):
        t.add_column(col, justify="right" if col in ("images", "benchmark") else "left")
    for r in rows:
        kind = r.kind + (" (set)" if r.kind_overridden else "")
        t.add_row(r.key, r.modality, r.region, kind, str(r.images), str(r.benchmark), ",".join(r.datasets))
    console.print(t)
    console.print("images: every image with the label; benchmark: single-label images not excluded")


def register(app_: typer.Typer) -> None:
    app_.add_typer(app, name="labels")
