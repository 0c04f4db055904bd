"""``cbir-pg eval compare``, ``compare-paper`` and ``compare-neighbours``: our runs against each other,
against the paper's published tables and against the authors' per-query neighbour lists."""

from __future__ import annotations

from pathlib import Path

import typer

from cbir_pg.app.cli._common import database, parse_int_list
from cbir_pg.app.cli.options import Cutoffs
from cbir_pg.app.cli.output import Col, Format, emit, format_option, say


def _f(x: float | None, signed: bool = False) -> str:
    if x is None:
        return "-"
    return f"{x:+.4f}" if signed else f"{x:.4f}"


def compare(
    ctx: typer.Context,
    run_a: int = typer.Argument(..., help="run id A (the difference is A - B)"),
    run_b: int = typer.Argument(..., help="run id B"),
    n: Cutoffs = "1,3,5,10",
    level: float = typer.Option(0.95, "--level", help="confidence level of the interval"),
    resamples: int = typer.Option(2000, "--resamples", help="bootstrap resamples"),
    permutations: int = typer.Option(2000, "--permutations", help="sign flips of the paired test"),
    seed: int = typer.Option(0, "--seed", help="seed of the resampling"),
    fmt: Format = format_option(),
) -> None:
    """Paired difference in micro and macro P@N of two retrieval runs over the same queries, with a stratified bootstrap interval and a paired sign-flip test."""
    from cbir_pg.eval.compare import compare_runs

    r = compare_runs(
        database(ctx),
        run_a,
        run_b,
        ns=parse_int_list(n),
        level=level,
        resamples=resamples,
        permutations=permutations,
        seed=seed,
    )
    pct = f"{round(level * 100)}%"
    cols = [
        Col("average"),
        Col("n", right=True, header="N"),
        Col("a", fmt=_f, right=True, header=f"run {run_a}"),
        Col("b", fmt=_f, right=True, header=f"run {run_b}"),
        Col("diff", fmt=lambda x: _f(x, True), right=True, header="A - B"),
        Col("low", fmt=lambda x: _f(x, True), right=True, header=f"{pct} low"),
        Col("high", fmt=lambda x: _f(x, True), right=True, header=f"{pct} high"),
        Col("p_value", fmt=lambda x: f"{x:.4f}", right=True, header="p"),
        Col(
            "established",
            get=lambda d: d.established,
            fmt=lambda x: "yes" if x else "no",
            header="CI excludes 0",
        ),
    ]
    emit(
        r.differences,
        cols,
        fmt,
        title=f"P@N of run {run_a} minus run {run_b}, paired over {r.n_queries} queries in {r.n_classes} classes",
        notes=[
            f"{pct} interval: stratified paired bootstrap ({r.resamples} resamples, seed {r.seed}); p: paired"
            f" sign-flip test ({r.permutations} flips)"
            + (f"; {r.n_left_out} queries with undefined precision left out" if r.n_left_out else "")
        ],
    )


def _paper_rows(r, fmt: Format) -> list[dict]:
    """One row per paper value: ours beside it, the difference and our run (a table shows only the
    values with a run; JSON and CSV show every one)."""
    return [
        {
            "table": v.paper.table,
            "model": v.paper.model + (" (†)" if v.paper.reassembled else ""),
            "key": v.paper.key,
            "metric": v.paper.column,
            "paper": v.paper.value,
            "ours": v.ours,
            "difference": v.difference,
            "run": v.run_id,
            "profile": (
                r.runs[(v.paper.table, v.paper.kind, v.paper.key)].label if v.run_id is not None else None
            ),
        }
        for v in r.values
        if v.run_id is not None or fmt != Format.table
    ]


def _paper_notes(r, tables) -> list[str]:
    """Each table's scope, then per table the paper rows that have no run yet."""
    from cbir_pg.eval.paper import TABLE_SCOPE

    notes = [f"Table {t}: {TABLE_SCOPE[t][2]}" for t in tables]
    if r.missing:
        by_table: dict[int, list[str]] = {}
        for t, kind, model in r.missing:
            by_table.setdefault(t, []).append(model if t != 4 else f"{model} ({kind})")
        notes += [f"Table {t}, no run yet: {', '.join(m)}" for t, m in by_table.items()]
    return notes


def compare_paper(
    ctx: typer.Context,
    table: int = typer.Option(None, "--table", help="2, 3 or 4; default: all three"),
    profile: str = typer.Option(
        None,
        "--profile",
        help="paper: only runs made with --profile paper on imports made with --profile paper",
    ),
    fmt: Format = format_option(),
) -> None:
    """Our stored runs beside the paper's Tables 2 (retrieval, combined set), 3 (COVIDx) and 4 (kNN, linear probe): our value, the paper's, the difference, and the rows with no run yet."""
    from cbir_pg.eval.paper import TABLES, compare_paper

    tables = (table,) if table is not None else TABLES
    with database(ctx).connection() as conn:
        r = compare_paper(conn, tables, profile)
    rows = _paper_rows(r, fmt)
    cols = [
        Col("table", right=True),
        Col("model"),
        Col("key"),
        Col("metric"),
        Col("paper", fmt=lambda x: f"{x:.3f}", right=True),
        Col("ours", fmt=_f, right=True),
        Col("difference", fmt=lambda x: _f(x, True), right=True, header="ours - paper"),
        Col("run", right=True),
        Col("profile"),
    ]
    notes = _paper_notes(r, tables)
    notes.append("(†) reassembled from a garbled text extraction of the paper; paper values have 3 decimals")
    emit(
        rows,
        cols,
        fmt,
        title="The paper's published numbers beside ours",
        notes=notes,
        empty="no run matches a paper table yet; " + "; ".join(notes),
    )
    if fmt != Format.table and r.missing:
        say(notes[-2] if len(notes) > 1 else "", fmt)


def compare_neighbours(
    ctx: typer.Context,
    file: Path = typer.Argument(..., help="the authors' experiments_<Model>.zip, or the knn.csv inside it"),
    run: int = typer.Option(..., "--run", help="our retrieval run id"),
    n: int = typer.Option(10, "--n", help="compare the top n neighbours"),
    member: str = typer.Option(None, "--member", help="the knn.csv member of an archive that holds several"),
    show: int = typer.Option(10, "--show", help="how many disagreements to list"),
    fmt: Format = format_option(),
) -> None:
    """Compare a run's top-n neighbour lists with the authors' published per-query results (knn.csv of experiments_*.zip): share of queries that agree, first disagreements."""
    from cbir_pg.eval.neighbours import compare_neighbours as run_compare

    with database(ctx).connection() as conn:
        r = run_compare(conn, file, run, n=n, member=member, show=show)
    cols = [
        Col("query"),
        Col("rank", right=True, header="first differing rank"),
        Col("ours"),
        Col("theirs"),
        Col("same_set", fmt=lambda x: "yes" if x else "no", header="same set"),
    ]
    share = "-" if r.identical_share is None else f"{r.identical_share:.4f}"
    sset = "-" if r.same_set_share is None else f"{r.same_set_share:.4f}"
    say(
        f"run {r.run_id} against {r.source}: {r.matched} of {r.run_queries} run queries found in the file"
        f" ({r.file_queries} rows there); top-{r.n} identical {r.identical} ({share}),"
        f" same set {r.same_set} ({sset})",
        fmt,
    )
    emit(
        r.disagreements,
        cols,
        fmt,
        title=f"first {len(r.disagreements)} disagreements",
        empty="no disagreement",
    )


def register_eval(eval_app: typer.Typer) -> None:
    """Add ``compare``, ``compare-paper`` and ``compare-neighbours`` to the ``eval`` group."""
    eval_app.command("compare")(compare)
    eval_app.command("compare-paper")(compare_paper)
    eval_app.command("compare-neighbours")(compare_neighbours)
