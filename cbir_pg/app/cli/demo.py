"""``cbir-pg demo``: the main job end to end on real MedMNIST images."""

from __future__ import annotations

from pathlib import Path

import typer

from cbir_pg.app.cli._common import console, state


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
) -> None:
    """The main job on real images: start the database, migrate, import BreastMNIST + PneumoniaMNIST, embed, index, evaluate (ANN and exact), run kNN, write the report, print Table 2."""
    from cbir_pg.app.cli.evaluate import print_table2
    from cbir_pg.app.demo import StepEvent, run_demo

    def on_step(e: StepEvent) -> None:
        if e.status == "start":
            console.print(f"[bold cyan][{e.index}/{e.total}][/] {e.name} ...")
        else:
            console.print(f"      [green]done[/] in {e.seconds:.1f} s: {e.detail}", highlight=False)

    r = run_demo(
        dsn=state(ctx).dsn,
        data_dir=data_dir,
        model=model,
        out_dir=out,
        batch_size=batch_size,
        device=device,
        progress=progress,
        on_step=on_step,
    )
    console.print()
    print_table2(r.table2)
    if r.recall:
        console.print(
            "ANN recall of the top-N against exact: "
            + ", ".join(f"@{n} {v:.4f}" for n, v in r.recall.items())
        )
    if r.knn_metrics:
        console.print(
            f"kNN (k={r.knn_k}, chosen on val) on test: "
            + ", ".join(f"{k} {v:.3f}" for k, v in r.knn_metrics.items())
        )
    console.print(f"report: {r.report_index.resolve() if r.report_index else '-'}")
    console.print(f"database: `cbir-pg db url` · total {sum(r.seconds.values()):.0f} s")


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
