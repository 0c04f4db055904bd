"""``cbir-pg eval knn | linear | ablation``: the embedding-space analyses (Table 4, Fig. 3B).

Registered into the ``eval`` group by :mod:`cbir_pg.app.cli.evaluate` through :func:`register_eval`.
"""

from __future__ import annotations

import typer

from cbir_pg.app.cli._common import database, err_console, names_or_all, parse_int_list, split_names
from cbir_pg.app.cli.options import (
    Connections,
    EncoderKey,
    EvalDatasets,
    ModelKey,
    SearchMode,
    Seed,
    ShowProgress,
)
from cbir_pg.app.cli.output import Col, Format, emit, format_option, say


def _k_range(text: str):
    """``1..99`` / ``1-99`` (inclusive) or a comma list ``1,5,9``."""
    from cbir_pg.errors import ConfigError

    for sep in ("..", "-", ":"):
        if sep in text:
            a, _, b = text.partition(sep)
            try:
                lo, hi = int(a), int(b)
            except ValueError:
                break
            if lo < 1 or hi < lo:
                raise ConfigError(f"bad k range {text!r}: need 1 <= first <= last")
            return range(lo, hi + 1)
    try:
        return parse_int_list(text)
    except ConfigError:
        raise ConfigError(f"bad k range {text!r}: use e.g. 1..99 or 1,3,5") from None


def _metrics_table(title: str, rows: list[tuple[str, object]], fmt: Format, run_id: int) -> None:
    """One row per split: F1, AUPRC and AUROC, micro and macro."""
    from cbir_pg.eval.classification import AVERAGES, METRIC_NAMES

    cols = [Col("run", right=True), Col("split")] + [
        Col(
            f"{m}_{a}",
            fmt=lambda v: f"{v:.4f}",
            right=True,
            header=f"{m.upper() if m != 'f1' else 'F1'} {a}",
        )
        for m in METRIC_NAMES
        for a in AVERAGES
    ]
    data = [
        {"run": run_id, "split": name, **{f"{m}_{a}": v for m, a, v in met.as_rows()}} for name, met in rows
    ]
    emit(data, cols, fmt, title=title)


def knn(
    ctx: typer.Context,
    model: ModelKey = ...,
    k: str = typer.Option("1..99", "--k", help="k values tried on val: a range 1..99 or a list 1,5,9"),
    index_split: str = typer.Option("train", "--index-split", help="split(s) searched, comma-separated"),
    dataset: EvalDatasets = None,
    mode: SearchMode = None,
    ef_search: int = typer.Option(None, "--ef-search", help="hnsw.ef_search (raised to at least max k)"),
    weighted: bool = typer.Option(False, "--weighted/--no-weighted", help="similarity-weighted votes"),
    connections: Connections = 2,
    progress: ShowProgress = True,
    profile: str = typer.Option("default", "--profile", help="default or paper (exact search), recorded"),
    fmt: Format = format_option(),
) -> None:
    """kNN classification: k chosen on val by micro F1, reported on test; stored (kind knn)."""
    from cbir_pg.eval.knn import evaluate_knn
    from cbir_pg.profiles import get_profile

    prof = get_profile(profile)
    mode = mode or prof.search_mode

    r = evaluate_knn(
        database(ctx),
        model,
        k_range=_k_range(k),
        index_splits=split_names([index_split]),
        datasets=names_or_all(dataset),
        mode=mode,
        ef_search=ef_search,
        weighted=weighted,
        connections=connections,
        progress=progress,
        profile=prof.name,
    )
    say(
        f"model {r.model}: {r.n_val} val and {r.n_test} test queries against {r.n_index} index images, "
        f"{len(r.classes)} classes; best k = {r.k} (val micro F1 {r.selection.best_score:.4f})",
        fmt,
    )
    _metrics_table(f"kNN, k = {r.k}", [("val", r.val), ("test", r.test)], fmt, r.run_id)
    say(f"stored as run {r.run_id}", fmt)


def linear(
    ctx: typer.Context,
    model: EncoderKey = ...,
    seed: Seed = 0,
    lr: float = typer.Option(1e-3, "--lr"),
    weight_decay: float = typer.Option(0.01, "--weight-decay"),
    batch_size: int = typer.Option(512, "--batch-size"),
    max_epochs: int = typer.Option(100, "--max-epochs"),
    patience: int = typer.Option(
        20, "--patience", help="epochs without a better val criterion before stopping"
    ),
    dataset: EvalDatasets = None,
    device: str = typer.Option("cpu", "--device", help="torch device, e.g. cpu or cuda"),
    progress: ShowProgress = True,
    rule: str = typer.Option(
        None,
        "--rule",
        help="loss (stop on val loss, torch init; default) or paper (stop on val accuracy, N(0, 0.01) init)",
    ),
    profile: str = typer.Option("default", "--profile", help="default or paper (--rule paper), recorded"),
    fmt: Format = format_option(),
) -> None:
    """Linear probe (AdamW, early stopping on the validation set), reported on test; stored (kind linear)."""
    from cbir_pg.eval.linear import evaluate_linear
    from cbir_pg.profiles import get_profile

    prof = get_profile(profile)
    rule = rule or prof.probe_rule

    r = evaluate_linear(
        database(ctx),
        model,
        seed=seed,
        lr=lr,
        weight_decay=weight_decay,
        batch_size=batch_size,
        max_epochs=max_epochs,
        patience=patience,
        datasets=names_or_all(dataset),
        device=device,
        progress=progress,
        rule=rule,
        profile=prof.name,
    )
    stop = f"stopped early after {r.epochs_run} epochs" if r.stopped_early else f"ran {r.epochs_run} epochs"
    say(
        f"model {r.model}: trained on {r.n_train}, {stop}, best epoch {r.best_epoch} "
        f"(by val {'loss' if rule == 'loss' else 'accuracy'}); "
        f"{len(r.classes)} classes, seed {r.seed}",
        fmt,
    )
    _metrics_table("linear probe", [("val", r.val), ("test", r.test)], fmt, r.run_id)
    say(f"stored as run {r.run_id}", fmt)


def ablation(
    ctx: typer.Context,
    model: EncoderKey = ...,
    sizes: str = typer.Option("5,10,25,50,100,250,500,1000,3000", "--sizes", help="index images per class"),
    min_class_size: int = typer.Option(
        3000, "--min-class-size", help="classes need more index images than this"
    ),
    queries_per_class: int = typer.Option(38, "--queries-per-class"),
    seeds: int = typer.Option(1, "--seeds", help="number of random index draws (seeds 0..n-1)"),
    dataset: EvalDatasets = None,
    mode: str = typer.Option("exact", "--mode", help="exact (default) or ann"),
    progress: ShowProgress = True,
    fmt: Format = format_option(),
) -> None:
    """Index-size ablation (Fig. 3B): P@1 with N random index images per class; stored (kind ablation)."""
    from cbir_pg.errors import ConfigError
    from cbir_pg.eval.ablation import run_ablation

    if seeds < 1:
        raise ConfigError("--seeds must be at least 1")
    r = run_ablation(
        database(ctx),
        model,
        sizes=parse_int_list(sizes),
        min_class_size=min_class_size,
        queries_per_class=queries_per_class,
        seeds=tuple(range(seeds)),
        datasets=names_or_all(dataset),
        mode=mode,
        progress=progress,
    )
    for note in r.notes:
        err_console.print(f"scaled down: {note}", markup=False, highlight=False)
    say(
        f"model {r.model}: {len(r.classes)} classes with more than {r.min_class_size} index images "
        f"({', '.join(c.key for c in r.classes)}), {r.queries_per_class} queries per class",
        fmt,
    )
    emit(
        [{"run": r.run_id, "n": size, "p1": p1} for size, p1 in r.mean_by_size().items()],
        [
            Col("run", right=True),
            Col("n", right=True, header="N"),
            Col("p1", fmt=lambda v: f"{v:.4f}", right=True, header="P@1 (mean over seeds)"),
        ],
        fmt,
        title="P@1 by index images per class",
    )
    say(f"stored as run {r.run_id}", fmt)


def register_eval(eval_app: typer.Typer) -> None:
    """Add ``knn``, ``linear`` and ``ablation`` to the ``eval`` group."""
    eval_app.command("knn")(knn)
    eval_app.command("linear")(linear)
    eval_app.command("ablation")(ablation)
