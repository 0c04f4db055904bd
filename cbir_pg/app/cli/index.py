"""``cbir-pg index``: build, inspect and drop a model's HNSW cosine index."""

from __future__ import annotations

from contextlib import contextmanager

import typer

from cbir_pg.app.cli._common import console, database
from cbir_pg.app.cli.options import EncoderKey, ModelKey, OnlyModel
from cbir_pg.app.cli.output import Col, Format, emit, format_option

app = typer.Typer(help="HNSW index per model: build (after loading), status, drop.", no_args_is_help=True)


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def parse_size_mb(text: str) -> int:
    """``"2GB"`` → 2048, ``"512MB"`` → 512, ``"1024"`` → 1024 (MB), as PostgreSQL writes memory sizes."""
    import re

    from cbir_pg.errors import ConfigError

    m = re.fullmatch(r"\s*(\d+)\s*(kB|MB|GB|TB)?\s*", text, flags=re.IGNORECASE)
    if not m:
        raise ConfigError(f"bad memory size {text!r}: use e.g. 512MB or 2GB")
    factor = {"kb": 1 / 1024, "mb": 1, "gb": 1024, "tb": 1024 * 1024}[(m.group(2) or "MB").lower()]
    mb = int(int(m.group(1)) * factor)
    if mb < 64:
        raise ConfigError(f"maintenance_work_mem {text!r} is below 64MB")
    return mb


@app.command()
def build(
    ctx: typer.Context,
    model: ModelKey = ...,
    m: int = typer.Option(16, "--m", help="HNSW neighbours per node"),
    ef_construction: int = typer.Option(64, "--ef-construction", help="HNSW candidate list while building"),
    concurrently: bool = typer.Option(
        False, "--concurrently/--no-concurrently", help="build without blocking writes (slower)"
    ),
    storage: str = typer.Option(
        "halfvec",
        "--storage",
        help="halfvec (default: measured fastest at equal recall) or vector (full float32 graph)",
    ),
    quantize: str = typer.Option(
        None, "--quantize", help="'binary': binary-quantised index, exact re-ranking"
    ),
    recall_queries: int = typer.Option(
        100, "--recall-queries", help="stored vectors to measure recall@10 with (0: skip)"
    ),
    maintenance_work_mem: str = typer.Option(
        None,
        "--maintenance-work-mem",
        help="memory for the build, e.g. 2GB or 512MB (default: sized to the graph, capped by the server);"
        " a parallel build allocates it in /dev/shm, so keep it below the server's shared memory",
    ),
) -> None:
    """Build the model's HNSW cosine index after loading: memory sized to the graph, parallel workers, ANALYZE."""
    from cbir_pg.index import build_index

    with _build_progress() as on_progress:
        report = build_index(
            database(ctx),
            model,
            m=m,
            ef_construction=ef_construction,
            concurrently=concurrently,
            quantize=quantize,
            storage=storage,
            progress=on_progress,
            recall_queries=recall_queries,
            maintenance_work_mem_mb=parse_size_mb(maintenance_work_mem) if maintenance_work_mem else None,
        )
    _say_built(report)


@contextmanager
def _build_progress():
    """A transient progress bar following pg_stat_progress_create_index; yields its callback."""
    from rich.progress import BarColumn, Progress, TextColumn

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

        yield on_progress


def _say_built(report) -> None:
    """The index built, its memory and workers, what it replaced and its measured recall."""
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
    model: OnlyModel = None,
    fmt: Format = format_option(),
) -> None:
    """Index size, parameters, and build progress (pg_stat_progress_create_index)."""
    from cbir_pg.index import index_status

    def progress(s) -> str | None:
        if s.progress is None:
            return None
        frac = s.progress.fraction
        return s.progress.phase + (f" {frac:.0%}" if frac is not None else "")

    cols = [
        Col("model"),
        Col("vectors", lambda s: s.rows, lambda n: f"{n:,}", right=True),
        Col("dim", right=True),
        Col("index", lambda s: s.index_name),
        Col("kind"),
        Col("storage"),
        Col("valid", lambda s: s.valid, lambda v: "yes" if v else "NO"),
        Col("m", right=True),
        Col("ef_construction", right=True, header="ef_constr."),
        Col("size_bytes", lambda s: s.size_bytes, _size, right=True, header="size"),
        Col("build_progress", progress, header="build progress"),
    ]
    emit(index_status(database(ctx), model), cols, fmt, empty="no models yet (cbir.encoder is empty)")


@app.command()
def drop(
    ctx: typer.Context,
    model: EncoderKey = ...,
    concurrently: bool = typer.Option(
        False, "--concurrently/--no-concurrently", help="drop without blocking reads and writes"
    ),
) -> None:
    """Drop the model's HNSW index(es); searches then fall back to exact scans."""
    from cbir_pg.index import drop_index

    dropped = drop_index(database(ctx), model, concurrently=concurrently)
    console.print(f"dropped {', '.join(dropped)}" if dropped else f"{model} has no HNSW index")


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="index")
