"""``cbir-pg models``: the encoder registry."""

from __future__ import annotations

import typer

from cbir_pg.app.cli._common import console, database
from cbir_pg.app.cli.output import Col, Format, emit, format_option

app = typer.Typer(
    help="Encoders: list the registered models and whether their weights are here.", no_args_is_help=True
)


def is_test_encoder(config) -> bool:
    """The tiny encoders with random seeded weights: for tests, never for retrieval."""
    return str(config.weights_source or "").startswith("random:")


@app.command("list")
def list_cmd(
    ctx: typer.Context,
    weights: bool = typer.Option(
        True, "--weights/--no-weights", help="check the local weights (HF cache, packages, checkpoints)"
    ),
    vectors: bool = typer.Option(
        True, "--vectors/--no-vectors", help="count each model's stored vectors in the database"
    ),
    fmt: Format = format_option(),
) -> None:
    """Show every encoder: key, dimension, family, input size, whether it has a text tower (text search),
    whether weights are available locally, how many vectors the database holds for it, and which are
    test encoders (random weights, marked *)."""
    from cbir_pg.encoders import list_encoders, weights_available
    from cbir_pg.encoders.registry import text_tower_keys

    texts = set(text_tower_keys())
    stored: dict[str, int] = {}
    if vectors:
        from cbir_pg.index import index_status

        stored = {s.model: s.rows for s in index_status(database(ctx))}
    notes = ["* test encoder: random seeded weights, for tests only (not for retrieval)"]
    cols = [
        Col("key", fmt=lambda k: f"{k} *" if k in test_keys else k),
        Col("test_encoder", lambda c: c.key in test_keys, header="test"),
        Col("dim", right=True),
        Col("family"),
        Col("input_size", fmt=lambda n: f"{n}px", right=True, header="input"),
        Col("text_tower", lambda c: c.key in texts, header="text tower"),
        Col(
            "weights_here",
            (lambda c: weights_available(c)) if weights else (lambda c: None),
            header="weights here",
        ),
        Col("weights_source", header="weights source"),
    ]
    if vectors:
        cols.insert(6, Col("stored_vectors", lambda c: stored.get(c.key, 0), right=True, header="vectors"))
    encoders = list_encoders()
    test_keys = {c.key for c in encoders if is_test_encoder(c)}
    emit(encoders, cols, fmt, notes=notes)


@app.command("drop")
def drop_cmd(
    ctx: typer.Context,
    model: str = typer.Argument(..., help="encoder key whose stored vectors are dropped"),
    yes: bool = typer.Option(False, "--yes/--no-yes", "-y", help="do not ask for confirmation"),
) -> None:
    """Drop a model's embedding table and index (e.g. after its weights or preprocessing changed)."""
    from cbir_pg.index import drop_embeddings

    if not yes:
        typer.confirm(f"drop every stored {model} vector?", abort=True)
    rows = drop_embeddings(database(ctx), model)
    console.print(f"dropped cbir.embedding_{model} ({rows} vectors)")


def register(app_root: typer.Typer) -> None:
    app_root.add_typer(app, name="models")
