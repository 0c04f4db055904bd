"""``cbir-pg search``: the most similar cases to an image file or a stored image."""

from __future__ import annotations

from pathlib import Path

import typer

from cbir_pg.app.cli._common import console, database


def search(
    ctx: typer.Context,
    path: Path = typer.Argument(None, help="query image file (embedded on the fly when not in the database)"),
    image_id: int = typer.Option(None, "--image-id", help="query by a stored image's id instead of a file"),
    model: str = typer.Option(..., "--model", "-m", help="encoder key, e.g. efficientnet_lite0"),
    k: int = typer.Option(10, "-k", "--k", help="number of neighbours"),
    split: str = typer.Option(None, "--split", help="only neighbours from this split (train, val, test)"),
    dataset: str = typer.Option(None, "--dataset", help="only neighbours from this dataset key"),
    modality: str = typer.Option(None, "--modality", help="only neighbours of this modality"),
    exclude_same_patient: bool = typer.Option(
        False, "--exclude-same-patient", help="leave out the query's patient"
    ),
    ef_search: int = typer.Option(
        None, "--ef-search", help="HNSW search breadth (raised to at least k anyway)"
    ),
    png: Path = typer.Option(None, "--png", help="write a Fig. 2 style grid PNG here"),
) -> None:
    """Show the k most similar cases: rank, image, label, dataset, similarity, patient sex and age."""
    from rich.table import Table

    from cbir_pg.errors import ConfigError
    from cbir_pg.search import search_with_query, write_search_grid

    if (path is None) == (image_id is None):
        raise ConfigError("give an image file or --image-id (one of them)")
    db = database(ctx)
    query, hits = search_with_query(
        db,
        model,
        image_id=image_id,
        path=path,
        k=k,
        split=split,
        dataset=dataset,
        modality=modality,
        exclude_same_patient=exclude_same_patient,
        ef_search=ef_search,
    )
    what = f"image {query.image_id}" if query.image_id is not None else str(query.path)
    extra = " (embedded on the fly)" if query.embedded_on_the_fly else ""
    console.print(f"query: {what}{extra}, label {query.label or 'unknown'}, model {model}")
    table = Table("rank", "image", "label", "dataset", "similarity", "sex", "age")
    for h in hits:
        table.add_row(
            str(h.rank),
            f"{h.image_id} {h.uri}",
            h.label or "-",
            h.dataset,
            f"{h.similarity:.4f}",
            h.sex or "-",
            f"{h.age:.0f}" if h.age is not None else "-",
        )
    console.print(table)
    if len(hits) < k:
        console.print(f"only {len(hits)} images match (asked for {k})")
    if png is not None:
        out = write_search_grid(db, query, hits, png)
        console.print(f"wrote {out}")


def register(app: typer.Typer) -> None:
    app.command(name="search")(search)
