"""``cbir-pg embeddings``: vectors made elsewhere, e.g. the paper's published HDF5 files."""

from __future__ import annotations

from pathlib import Path

import typer

from cbir_pg.app.cli._common import console, database, names_or_all

app = typer.Typer(
    help="Embeddings made elsewhere: import the paper's published HDF5 files.", no_args_is_help=True
)


@app.command("import-h5")
def import_h5(
    ctx: typer.Context,
    path: Path = typer.Argument(..., help="an HDF5 file, or a folder searched for *.h5 / *.hdf5"),
    model: str = typer.Option(
        ..., "--model", "-m", help="encoder key the vectors belong to, e.g. biomedclip"
    ),
    dataset: list[str] = typer.Option(
        None, "--dataset", "-d", help="dkfz-splits import(s) to match against (default: all of them)"
    ),
) -> None:
    """Load published vectors (one HDF5 dataset per image, named by its split-CSV filepath) into the
    model's table, matched to the images of a dkfz-splits import; dimension and norm checked."""
    from cbir_pg.ingest.h5 import import_h5 as run

    s = run(database(ctx), path, model, datasets=names_or_all(dataset))
    for f in s.files:
        extra = f" (e.g. {', '.join(f.examples_unmatched)})" if f.unmatched else ""
        console.print(
            f"{f.file}: {f.loaded} of {f.vectors} vectors loaded, {f.unmatched} without an image{extra};"
            f" sha256 {f.sha256[:16]}",
            markup=False,
            highlight=False,
        )
    console.print(
        f"model {s.model}: {s.loaded} imported vectors (config {s.config_hash[:12]}, marked as imported)",
        markup=False,
        highlight=False,
    )


def register(app_: typer.Typer) -> None:
    app_.add_typer(app, name="embeddings")
