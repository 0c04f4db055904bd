"""``cbir-pg models``: the encoder registry."""

from __future__ import annotations

import typer

from cbir_pg.app.cli._common import console, database

app = typer.Typer(
    help="Encoders: list the registered models and whether their weights are here.", no_args_is_help=True
)


@app.command("list")
def list_cmd(
    weights: bool = typer.Option(
        True, "--weights/--no-weights", help="check the local weights (HF cache, packages, checkpoints)"
    ),
) -> None:
    """Show every encoder: key, dimension, family, input size, and whether weights are available locally."""
    from rich.table import Table

    from cbir_pg.encoders import list_encoders, weights_available

    table = Table("key", "dim", "family", "input", "weights here", "weights source")
    table.columns[0].no_wrap = True
    for c in list_encoders():
        avail = ("yes" if weights_available(c) else "no") if weights else "?"
        table.add_row(c.key, str(c.dim), c.family, f"{c.input_size}px", avail, c.weights_source)
    from rich.console import Console

    Console(width=max(console.width, 120)).print(table)


@app.command("drop")
def drop_cmd(
    ctx: typer.Context,
    model: str = typer.Argument(..., help="encoder key whose stored vectors are dropped"),
    yes: bool = typer.Option(False, "--yes", "-y", help="do not ask for confirmation"),
) -> None:
    """Drop a model's embedding table and index (e.g. after its weights or preprocessing changed)."""
    from cbir_pg.index import drop_embeddings

    if not yes:
        typer.confirm(f"drop every stored {model} vector?", abort=True)
    rows = drop_embeddings(database(ctx), model)
    console.print(f"dropped cbir.embedding_{model} ({rows} vectors)")


def register(app_root: typer.Typer) -> None:
    app_root.add_typer(app, name="models")
