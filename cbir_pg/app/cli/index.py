"""``cbir-pg index``: build, inspect and drop a model's HNSW cosine index."""

from __future__ import annotations

import typer

from cbir_pg.app.cli._common import console, database

app = typer.Typer(help="HNSW index per model: build (after loading), status, drop.", no_args_is_help=True)


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


@app.command()
def build(
    ctx: typer.Context,
    model: str = typer.Option(..., "--model", "-m", help="encoder key, e.g. efficientnet_lite0"),
    m: int = typer.Option(16, "--m", help="HNSW neighbours per node"),
    ef_construction: int = typer.Option(64, "--ef-construction", help="HNSW candidate list while building"),
    concurrently: bool = typer.Option(False, "--concurrently", help="build without blocking writes (slower)"),
    quantize: str = typer.Option(
        None, "--quantize", help="'binary': binary-quantised index, exact re-ranking"
    ),
    recall_queries: int = typer.Option(
        100, "--recall-queries", help="stored vectors to measure recall@10 with (0: skip)"
    ),
) -> None:
    """Build the model's HNSW cosine index after loading: memory sized to the graph, parallel workers, ANALYZE."""
    from rich.progress import BarColumn, Progress, TextColumn

    from cbir_pg.index import build_index

    db = database(ctx)
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task("starting", total=None)

        def on_progress(p) -> None:
            done, total = (
                (p.tuples_done, p.tuples_total) if p.tuples_total else (p.blocks_done, p.blocks_total or None)
            )
            bar.update(task, description=p.phase, completed=done, total=total)

        report = build_index(
            db,
            model,
            m=m,
            ef_construction=ef_construction,
            concurrently=concurrently,
            quantize=quantize,
            progress=on_progress,
            recall_queries=recall_queries,
        )
    console.print(
        f"built {report.index_name} ({report.opclass}, m={report.m}, ef_construction={report.ef_construction}) "
        f"on {report.rows:,} x {report.dim}-d vectors in {report.build_seconds:.1f} s; size {_size(report.size_bytes)}"
    )
    console.print(
        f"maintenance_work_mem {report.maintenance_work_mem_mb} MB, {report.parallel_workers} parallel workers"
    )
    if report.dropped:
        console.print(f"dropped {', '.join(report.dropped)}")
    if report.recall_at_10 is not None:
        console.print(
            f"recall@10 vs exact search: {report.recall_at_10:.3f} over {report.recall_queries} queries"
        )


@app.command()
def status(
    ctx: typer.Context,
    model: str = typer.Option(None, "--model", "-m", help="only this encoder"),
) -> None:
    """Index size, parameters, and build progress (pg_stat_progress_create_index)."""
    from rich.table import Column, Table

    from cbir_pg.index import index_status

    rows = index_status(database(ctx), model)
    if not rows:
        console.print("no models yet (cbir.encoder is empty)")
        return
    table = Table(
        Column("model", no_wrap=True),
        "vectors",
        "dim",
        Column("index", no_wrap=True),
        "kind",
        "valid",
        "m",
        "ef_constr.",
        "size",
        "build progress",
    )
    for s in rows:
        prog = "-"
        if s.progress is not None:
            frac = s.progress.fraction
            prog = s.progress.phase + (f" {frac:.0%}" if frac is not None else "")
        table.add_row(
            s.model,
            f"{s.rows:,}",
            str(s.dim),
            s.index_name or "(none)",
            s.kind or "-",
            "-" if s.valid is None else ("yes" if s.valid else "NO"),
            str(s.m or "-"),
            str(s.ef_construction or "-"),
            _size(s.size_bytes),
            prog,
        )
    console.print(table)


@app.command()
def drop(
    ctx: typer.Context,
    model: str = typer.Option(..., "--model", "-m", help="encoder key"),
    concurrently: bool = typer.Option(False, "--concurrently", help="drop without blocking reads and writes"),
) -> None:
    """Drop the model's HNSW index(es); searches then fall back to exact scans."""
    from cbir_pg.index import drop_index

    dropped = drop_index(database(ctx), model, concurrently=concurrently)
    console.print(f"dropped {', '.join(dropped)}" if dropped else f"{model} has no HNSW index")


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="index")
