"""``cbir-pg explain``: why do two images match? Similarity maps for a query and a neighbour."""

from __future__ import annotations

from pathlib import Path

import typer

from cbir_pg.app.cli._common import database, err_console
from cbir_pg.app.cli.options import ModelKey
from cbir_pg.app.cli.output import Col, Format, emit, format_option, print_line, say


def _ref(text: str) -> int | Path:
    """An image id (digits) or a file path."""
    return int(text) if text.isdigit() else Path(text)


def explain(
    ctx: typer.Context,
    query: str = typer.Argument(..., help="query: a stored image id or an image file"),
    neighbour: str = typer.Argument(..., help="neighbour: a stored image id or an image file"),
    model: ModelKey = ...,
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


def eval_explain(
    ctx: typer.Context,
    model: ModelKey = ...,
    methods: list[str] = typer.Option(
        None, "--method", help="method(s) to measure (repeatable; default: occlusion, rise, gradients)"
    ),
    pairs: int = typer.Option(
        12, "--pairs", help="(test query, top-1 train neighbour) pairs, spread over labels"
    ),
    grid: int = typer.Option(7, "--grid", help="cells per side of the deletion/insertion tiling"),
    steps: int = typer.Option(12, "--steps", help="points of each deletion/insertion curve"),
    random_orders: int = typer.Option(
        2, "--random-orders", help="random cell orders per pair (the baseline)"
    ),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or auto"),
    fmt: Format = format_option(),
) -> None:
    """Faithfulness of the similarity maps: deletion and insertion areas per method against a random
    cell order, and the time per map; stored in cbir.explain_faithfulness (cbir_report view of that name)."""
    from cbir_pg.app.cli._common import split_names
    from cbir_pg.eval.explain import evaluate_explanations

    r = evaluate_explanations(
        database(ctx),
        model,
        methods=split_names(methods) or ("occlusion", "rise", "gradients"),
        pairs=pairs,
        grid=grid,
        steps=steps,
        random_orders=random_orders,
        device=device,
    )
    say(
        f"model {r.model}: {len(r.pairs)} pairs, {r.grid}x{r.grid} cells, {r.steps} steps, on {r.device}", fmt
    )
    rows = [
        {
            "method": m.method,
            "deletion": m.deletion_auc,
            "random_deletion": m.random_deletion_auc,
            "insertion": m.insertion_auc,
            "random_insertion": m.random_insertion_auc,
            "seconds": m.seconds_per_map,
            "verdict": "no better than random" if m.no_better_than_random else "better than random",
        }
        for m in r.methods
    ]
    f4 = lambda x: f"{x:.4f}"  # noqa: E731
    cols = [
        Col("method"),
        Col("deletion", fmt=f4, right=True, header="deletion AUC (lower is better)"),
        Col("random_deletion", fmt=f4, right=True, header="random"),
        Col("insertion", fmt=f4, right=True, header="insertion AUC (higher is better)"),
        Col("random_insertion", fmt=f4, right=True, header="random"),
        Col("seconds", fmt=lambda x: f"{x:.2f}", right=True, header="s / map"),
        Col("verdict"),
    ]
    emit(rows, cols, fmt)


def register(app: typer.Typer) -> None:
    """``cbir-pg explain``, and ``cbir-pg eval explain`` on the eval group (registered after this module)."""
    from cbir_pg.app.cli.evaluate import app as eval_app

    app.command(name="explain")(explain)
    eval_app.command(name="explain")(eval_explain)
