"""``cbir-pg ingest --model KEY``: embed images into the model's table; ``cbir-pg ingest status``: counts."""

from __future__ import annotations

from pathlib import Path

import typer

from cbir_pg.app.cli._common import check_split, console, database, names_or_all, split_names
from cbir_pg.app.cli.options import Datasets, OnlyModel, ShowProgress
from cbir_pg.app.cli.output import Col, Format, emit, format_option

app = typer.Typer(
    help="Embed images with an encoder (claim → decode → encode → COPY); `ingest status` shows progress.",
    invoke_without_command=True,
)


# one piece: typer declares its options in the signature
@app.callback()
def ingest(
    ctx: typer.Context,
    model: list[str] = typer.Option(
        None, "--model", "-m", help="encoder key (see: cbir-pg models list); repeatable with --follow"
    ),
    dataset: Datasets = None,
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
    progress: ShowProgress = True,
    follow: bool = typer.Option(
        False,
        "--follow",
        help="run as a service: embed what is pending, then new images as they arrive (LISTEN/NOTIFY and "
        "polling); SIGTERM finishes the batch in hand and exits 0 (docs/pacs.md)",
    ),
    poll_interval: float = typer.Option(
        10.0, "--poll-interval", min=0.1, help="--follow: seconds between polls when no notification comes"
    ),
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

    models = split_names(model)
    if not models:
        raise ConfigError("missing --model KEY (see: cbir-pg models list)")
    if follow:
        _follow(ctx, models, names_or_all(dataset), batch_size, device, weights, max_attempts, poll_interval)
        return
    if len(models) > 1:
        raise ConfigError("several --model options need --follow; run one cbir-pg ingest per model")
    s = run_ingest(
        database(ctx),
        models[0],
        datasets=names_or_all(dataset),
        splits=names_or_all(split),
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
    _say_ingested(s)


def _say_ingested(s) -> None:
    """One line: what was embedded, how fast, where, and what failed."""
    errs = ", ".join(f"{k} {v}" for k, v in sorted(s.errors.items()))
    console.print(
        f"{s.model}: embedded {s.embedded} images in {s.seconds:.1f} s ({s.images_per_s:.1f} img/s, {s.device},"
        f" {s.processes} process{'es' if s.processes > 1 else ''}); {s.done} stored, {s.remaining} left"
        + (f"; failures: {errs}" if errs else "")
    )


def _follow(ctx, models, datasets, batch_size, device, weights, max_attempts, poll_interval) -> None:
    """The follower in the foreground; SIGTERM and SIGINT set its stop event (the batch in hand is
    finished), and the command exits 0."""
    import signal
    import threading

    from cbir_pg.ingest.follow import follow

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    console.print(f"following new images for {', '.join(models)} (SIGTERM to stop)")
    s = follow(
        database(ctx),
        models,
        datasets=datasets,
        stop=stop,
        poll_interval=poll_interval,
        batch_size=batch_size,
        device=device,
        weights=weights,
        max_attempts=max_attempts,
    )
    done = ", ".join(f"{m} {n}" for m, n in s.embedded.items())
    console.print(f"follower {s.follower_id} stopped after {s.seconds:.1f} s: embedded {done}")


@app.command()
def status(
    ctx: typer.Context,
    model: OnlyModel = None,
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
    from cbir_pg.ingest.follow import follower_status

    followers = [f for f in follower_status(database(ctx)) if model is None or f.model == model]
    if followers and fmt == Format.table:
        fcols = [Col("follower", lambda r: r.id), Col("host"), Col("pid", right=True), Col("model")]
        fcols += [Col("state"), Col("heartbeat", lambda r: f"{r.heartbeat_age_s:.0f} s ago", right=True)]
        fcols += [Col("embedded", right=True), Col("pending", right=True)]
        fcols += [Col("lag", lambda r: f"{r.lag_s:.0f} s", right=True)]
        emit(followers, fcols, fmt)


def register(app_root: typer.Typer) -> None:
    app_root.add_typer(app, name="ingest")
