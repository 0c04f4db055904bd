"""``cbir-pg explain``: why do two images match? Similarity maps for a query and a neighbour."""

from __future__ import annotations

from pathlib import Path

import typer

from cbir_pg.app.cli._common import database, err_console
from cbir_pg.app.cli.output import print_line


def _ref(text: str) -> int | Path:
    """An image id (digits) or a file path."""
    return int(text) if text.isdigit() else Path(text)


def explain(
    ctx: typer.Context,
    query: str = typer.Argument(..., help="query: a stored image id or an image file"),
    neighbour: str = typer.Argument(..., help="neighbour: a stored image id or an image file"),
    model: str = typer.Option(..., "--model", "-m", help="encoder key, e.g. efficientnet_lite0"),
    method: str = typer.Option("occlusion", "--method", help="occlusion, rise or gradients"),
    png: Path = typer.Option(None, "--png", help="write the two overlays (query | neighbour) as a PNG here"),
    npy: Path = typer.Option(None, "--npy", help="write the raw maps as a (2, S, S) float32 .npy here"),
    json_out: Path = typer.Option(None, "--json", help="write the raw maps and their metadata as JSON here"),
    grid: int = typer.Option(None, "--grid", help="occlusion: cells per side (default 7)"),
    n_masks: int = typer.Option(None, "--n-masks", help="rise: number of random masks (default 96)"),
    steps: int = typer.Option(None, "--steps", help="gradients: integration steps (default 16)"),
    seed: int = typer.Option(None, "--seed", help="rise: mask seed (default 0)"),
    cache: bool = typer.Option(True, "--cache/--no-cache", help="reuse and keep maps in $CBIR_PG_HOME/cache"),
) -> None:
    """Similarity maps: which regions of each image drive their cosine similarity under MODEL.

    QUERY and NEIGHBOUR are stored image ids or files. Occlusion and RISE work for every encoder;
    gradients (integrated gradients) needs captum (pip install 'cbir-pg[explain]')."""
    import json

    from cbir_pg.config import get_settings
    from cbir_pg.explain import MapCache, explain_images, with_params

    params = with_params(None, grid=grid, n_masks=n_masks, steps=steps, seed=seed)
    store = MapCache(get_settings().cache_dir / "explain") if cache else None
    out = explain_images(
        database(ctx), _ref(query), _ref(neighbour), model, method, params=params, cache=store
    )
    m = out.maps
    how = "from the cache" if m.cached else f"in {m.seconds:.2f} s"
    print_line(
        f"{method} maps for {query} and {neighbour} with {model}: similarity {m.similarity:.4f}, {how}"
    )
    for path, data in ((png, out.png() if png else None), (npy, m.npy() if npy else None)):
        if path is not None:
            path.write_bytes(data)
            err_console.print(f"wrote {path}", markup=False, highlight=False)
    if json_out is not None:
        json_out.write_text(json.dumps(m.as_json()))
        err_console.print(f"wrote {json_out}", markup=False, highlight=False)


def register(app: typer.Typer) -> None:
    app.command(name="explain")(explain)
