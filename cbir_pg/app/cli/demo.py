"""``cbir-pg demo``: the main job end to end on real MedMNIST images."""

from __future__ import annotations

from pathlib import Path

import typer

from cbir_pg.app.cli._common import console, state
from cbir_pg.app.cli.output import print_line

#: what the demo says about the embedded server it leaves running (README's sample shows it verbatim)
SERVER_NOTE = (
    "the embedded server keeps running for your queries (cbir-pg db psql, cbir-pg db url); "
    "stop it with cbir-pg db stop"
)


def demo(
    ctx: typer.Context,
    data_dir: Path = typer.Option(
        None,
        "--data-dir",
        envvar="CBIR_PG_DATA_DIR",
        help="folder with breastmnist.npz and pneumoniamnist(_subset).npz",
    ),
    model: str = typer.Option(
        "efficientnet_lite0", "--model", "-m", help="encoder key (its weights must be available)"
    ),
    out: Path = typer.Option(
        Path("cbir-pg-report"), "--out", help="folder for the PNG report and index.html"
    ),
    batch_size: int = typer.Option(64, "--batch-size", help="ingest batch size"),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda"),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="show progress bars"),
    fuse_with: str = typer.Option(
        "auto",
        "--fuse-with",
        help="second model for a fused row (embedded too); auto: efficientnet_lite2 if already embedded; none",
    ),
) -> None:
    """The main job on real images: start the database, migrate, import BreastMNIST + PneumoniaMNIST, embed, index, evaluate (ANN and exact), run kNN, write the report, print Table 2."""
    from cbir_pg.app.demo import StepEvent, run_demo

    def on_step(e: StepEvent) -> None:
        if e.status == "start":
            console.print(f"[bold cyan][{e.index}/{e.total}][/] {e.name} ...")
        else:
            print_line(f"      done in {e.seconds:.1f} s: {e.detail}")

    r = run_demo(
        dsn=state(ctx).dsn,
        data_dir=data_dir,
        model=model,
        out_dir=out,
        batch_size=batch_size,
        device=device,
        progress=progress,
        on_step=on_step,
        fuse_with=None if fuse_with == "none" else fuse_with,
    )
    _say_results(r, state(ctx).dsn)


def _say_results(r, dsn: str | None) -> None:
    """Table 2, the ANN recall, the fused row, kNN, where the report is and the database."""
    from cbir_pg.app.cli.evaluate import print_table2
    from cbir_pg.db.connect import redact

    console.print()
    print_table2(r.table2)
    if r.recall:
        print_line(
            f"ANN recall of the top-N against exact ({r.model}): "
            + ", ".join(f"@{n} {v:.4f}" for n, v in r.recall.items())
        )
    _say_fusion(r)
    if r.knn_metrics:
        print_line(
            f"kNN (k={r.knn_k}, chosen on val) on test: "
            + ", ".join(f"{k} {v:.3f}" for k, v in r.knn_metrics.items())
        )
    print_line(f"report: {r.report_index.resolve() if r.report_index else '-'}")
    print_line(f"database: {redact(r.dsn)}" if dsn else f"database: {SERVER_NOTE}")
    print_line(f"total {sum(r.seconds.values()):.0f} s")


def _say_fusion(r) -> None:
    if r.fused_run_id is not None:
        console.print(
            f"fused row: {r.fused_model} (reciprocal rank fusion, ANN), run {r.fused_run_id}",
            markup=False,
            highlight=False,
        )
        for key, (mi, ma) in r.fusion_differences.items():
            print_line(
                f"fused minus {key}, P@1 (95% paired bootstrap interval): micro {mi.phrase()}, macro {ma.phrase()}"
            )
    elif r.fusion_note:
        console.print(r.fusion_note, markup=False, highlight=False)


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
