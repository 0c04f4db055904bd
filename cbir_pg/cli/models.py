"""``cbir-pg models``: the encoder registry."""

from __future__ import annotations

import typer

from cbir_pg.cli._common import console

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
    for c in list_encoders():
        avail = ("yes" if weights_available(c) else "no") if weights else "?"
        table.add_row(c.key, str(c.dim), c.family, f"{c.input_size}px", avail, c.weights_source)
    console.print(table)


def register(app_root: typer.Typer) -> None:
    app_root.add_typer(app, name="models")
