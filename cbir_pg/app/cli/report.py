"""``cbir-pg report``: figures (Fig. 2, 3A, 3B, 5) and tables (leaderboard, Table 4) in one folder."""

from __future__ import annotations

from pathlib import Path

import typer

from cbir_pg.app.cli._common import console, database, err_console
from cbir_pg.app.cli.options import Seed


def report(
    ctx: typer.Context,
    out: Path = typer.Option(..., "--out", "-o", help="output folder (created)"),
    model: list[str] = typer.Option(
        None, "--model", "-m", help="model(s); default: every model with embeddings"
    ),
    tsne_sample: int = typer.Option(2000, "--tsne-sample", help="embeddings sampled for the t-SNE"),
    grid_queries: int = typer.Option(
        4, "--grid-queries", help="sampled queries in the retrieval grids (0: none)"
    ),
    seed: Seed = 0,
) -> None:
    """Write PNG figures and an index.html with the leaderboard and the kNN/linear table."""
    from cbir_pg.eval.report import write_report

    r = write_report(
        database(ctx),
        out,
        models=model or None,
        tsne_sample=tsne_sample,
        grid_queries=grid_queries,
        seed=seed,
    )
    for note in r.notes:
        err_console.print(f"note: {note}", markup=False, highlight=False)
    for f in r.figures:
        console.print(f"wrote {f}", markup=False, highlight=False)
    console.print(f"report: {r.index}", markup=False, highlight=False)


def register(app: typer.Typer) -> None:
    app.command("report")(report)
