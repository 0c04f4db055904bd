"""``cbir-pg ingest --model KEY``: embed images into the model's table; ``cbir-pg ingest status``: counts."""

from __future__ import annotations

from pathlib import Path

import typer

from cbir_pg.app.cli._common import check_split, console, database, split_names
from cbir_pg.app.cli.output import Col, Format, emit, format_option

app = typer.Typer(
    help="Embed images with an encoder (claim → decode → encode → COPY); `ingest status` shows progress.",
    invoke_without_command=True,
)


def _split_csv(values: list[str] | None) -> list[str] | None:
    return split_names(values) or None


@app.callback()
def ingest(
    ctx: typer.Context,
    model: str = typer.Option(None, "--model", "-m", help="encoder key (see: cbir-pg models list)"),
    dataset: list[str] = typer.Option(None, "--dataset", "-d", help="dataset key(s); default: all"),
    split: list[str] = typer.Option(
        None, "--split", "-s", callback=check_split, help="train, val and/or test; default: all"
    ),
    batch_size: int = typer.Option(64, "--batch-size", "-b", min=1),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda"),
    loader_workers: int = typer.Option(
        2, "--loader-workers", "-w", min=0, help="DataLoader processes decoding images"
    ),
    processes: int = typer.Option(
        1, "--processes", "-p", min=1, help="worker processes (each claims its own batches)"
    ),
    precision: str = typer.Option("fp32", "--precision", help="fp32, bf16 or fp16 (autocast)"),
    weights: Path = typer.Option(None, "--weights", help="local weights file or folder"),
    max_attempts: int = typer.Option(3, "--max-attempts", min=1, help="retries per failing image"),
    limit: int = typer.Option(None, "--limit", min=1, help="stop after this many images"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
    fast_decode: bool = typer.Option(
        False,
        "--fast-decode",
        help="decode JPEGs in PIL draft mode (DCT downscaling near the model's size): faster, pixels differ slightly",
    ),
) -> None:
    """Embed every image of the selection that has no vector for MODEL yet. Safe to rerun or run in parallel."""
    if ctx.invoked_subcommand is not None:
        return
    from cbir_pg.errors import ConfigError
    from cbir_pg.ingest import run_ingest

    if not model:
        raise ConfigError("missing --model KEY (see: cbir-pg models list)")
    s = run_ingest(
        database(ctx),
        model,
        datasets=_split_csv(dataset),
        splits=_split_csv(split),
        batch_size=batch_size,
        device=device,
        loader_workers=loader_workers,
        processes=processes,
        precision=precision,
        weights=weights,
        max_attempts=max_attempts,
        progress=progress,
        limit=limit,
        fast_decode=fast_decode,
    )
    errs = ", ".join(f"{k} {v}" for k, v in sorted(s.errors.items()))
    console.print(
        f"{s.model}: embedded {s.embedded} images in {s.seconds:.1f} s ({s.images_per_s:.1f} img/s, {s.device},"
        f" {s.processes} process{'es' if s.processes > 1 else ''}); {s.done} stored, {s.remaining} left"
        + (f"; failures: {errs}" if errs else "")
    )


@app.command()
def status(
    ctx: typer.Context,
    model: str = typer.Option(None, "--model", "-m", help="only this encoder"),
    fmt: Format = format_option(),
) -> None:
    """Exact done, pending and failed image counts per encoder and dataset."""
    from cbir_pg.ingest import ingest_status

    cols = [Col("encoder"), Col("dataset")] + [
        Col(k, right=True) for k in ("total", "done", "pending", "failed")
    ]
    emit(
        ingest_status(database(ctx), model),
        cols,
        fmt,
        empty="no embedding tables yet (run: cbir-pg ingest --model KEY)",
    )


def register(app_root: typer.Typer) -> None:
    app_root.add_typer(app, name="ingest")
