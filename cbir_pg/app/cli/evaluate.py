"""``cbir-pg eval``: the retrieval benchmark (top-N in SQL, P@N in Python, stored) and the Table 2 view."""

from __future__ import annotations

import math

import typer

from cbir_pg.app.cli._common import console, database, err_console, parse_int_list, split_names

app = typer.Typer(
    help="Evaluation: retrieval P@N (SQL top-N), stored runs, the paper's Table 2.", no_args_is_help=True
)


def _fmt(x: float | None, signed: bool = False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:+.4f}" if signed else f"{x:.4f}"


@app.command()
def retrieval(
    ctx: typer.Context,
    model: str = typer.Option(..., "--model", "-m", help="encoder key, e.g. efficientnet_lite0"),
    n: str = typer.Option("1,3,5,10", "--n", help="cut-offs N, comma-separated"),
    index_split: str = typer.Option(None, "--index-split", help="split(s) searched, comma-separated [train]"),
    query_split: str = typer.Option(
        None, "--query-split", help="split(s) of the query images, comma-separated [test]"
    ),
    dataset: list[str] = typer.Option(
        None, "--dataset", "-d", help="restrict to dataset key(s); default: all (combined)"
    ),
    mode: str = typer.Option(
        None, "--mode", help="ann (HNSW index; default) or exact (sequential scan; the paper profile)"
    ),
    ef_search: int = typer.Option(None, "--ef-search", help="hnsw.ef_search (raised to at least max N)"),
    compare_exact: bool = typer.Option(
        False, "--compare-exact", help="run ann and exact; report recall and ΔP@N"
    ),
    connections: int = typer.Option(2, "--connections", help="parallel database connections"),
    batch_size: int = typer.Option(256, "--batch-size", help="queries per SQL statement"),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="show a progress bar (queries/s)"),
    profile: str = typer.Option(
        "default",
        "--profile",
        help="default, or paper: the paper's protocol (test -> train, exact), recorded in the run",
    ),
) -> None:
    """Top-N retrieval of every query image against the index images, in SQL; prints and stores P@N."""
    from rich.table import Table

    from cbir_pg.eval.retrieval import evaluate_retrieval
    from cbir_pg.profiles import get_profile

    prof = get_profile(profile)
    index_split = index_split or ",".join(prof.index_splits)
    query_split = query_split or ",".join(prof.query_splits)
    mode = mode or prof.search_mode

    result = evaluate_retrieval(
        database(ctx),
        model,
        ns=parse_int_list(n),
        index_splits=split_names([index_split]),
        query_splits=split_names([query_split]),
        datasets=split_names(dataset) or None,
        mode=mode,
        ef_search=ef_search,
        compare_exact=compare_exact,
        batch_size=batch_size,
        connections=connections,
        progress=progress,
        profile=prof.name,
    )
    for w in result.warnings:
        err_console.print(f"warning: {w}", markup=False, highlight=False)
    p = result.primary
    scope = ", ".join(result.index_filter.datasets) if result.index_filter.datasets else "all datasets"
    console.print(
        f"model {result.model}: {p.n_queries} queries ({'/'.join(result.query_splits)}) against {p.n_index} index "
        f"images ({'/'.join(result.index_filter.splits or ())}), {scope}, profile {prof.name}",
        markup=False,
        highlight=False,
    )
    table = Table(show_header=True, header_style="bold")
    table.add_column("mode")
    table.add_column("average")
    for cut in result.ns:
        table.add_column(f"P@{cut}", justify="right")
    order = [m for m in ("ann", "exact") if m in result.runs]
    for m in order:
        r = result.runs[m]
        for avg, values in (("micro", r.summary.micro), ("macro", r.summary.macro)):
            table.add_row(m, avg, *[_fmt(v) for v in values])
    if result.recall is not None and result.delta_micro is not None and result.delta_macro is not None:
        table.add_row("ann vs exact", "recall", *[_fmt(v) for v in result.recall])
        table.add_row("ann - exact", "ΔP micro", *[_fmt(v, signed=True) for v in result.delta_micro])
        table.add_row("ann - exact", "ΔP macro", *[_fmt(v, signed=True) for v in result.delta_macro])
    console.print(table)
    for m in order:
        r = result.runs[m]
        ef = f", ef_search {r.ef_search}" if r.ef_search is not None else ""
        console.print(
            f"{m}: run {r.run_id}, {r.queries_per_second:,.0f} queries/s ({r.seconds:.1f} s){ef}",
            markup=False,
            highlight=False,
        )


@app.command()
def show(ctx: typer.Context) -> None:
    """Print the paper's Table 2 (P@1/3/5/10, micro and macro) for every evaluated model."""
    from cbir_pg.eval.runs import table2

    df = table2(database(ctx))
    if df.empty:
        console.print("no retrieval runs yet: run `cbir-pg eval retrieval --model KEY`")
        return
    print_table2(df)


def print_table2(df) -> None:
    """Render a :func:`cbir_pg.eval.runs.table2` frame as the paper's Table 2 (also used by ``cbir-pg demo``)."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    from cbir_pg.eval.runs import TABLE2_NS

    scopes = sorted({idx[2] for idx in df.index})
    one_scope = len(scopes) == 1
    title = "Retrieval precision P@N (the paper's Table 2): latest run per model and mode"
    table = Table(
        title=title + (f", {scopes[0]}" if one_scope else ""), header_style="bold", box=box.SIMPLE_HEAD
    )
    table.add_column("model")
    table.add_column("mode")
    table.add_column("profile")
    if not one_scope:
        table.add_column("scope")
    for avg in ("micro", "macro"):
        for cut in TABLE2_NS:
            table.add_column(f"{avg}\nP@{cut}", justify="right")
    table.add_column("run", justify="right")
    for key in df.index:
        model, mode, scope, profile, vectors = key
        values = [df.loc[key, (avg, f"P@{cut}")] for avg in ("micro", "macro") for cut in TABLE2_NS]
        prof = profile + (" (imported)" if vectors == "imported" else "")
        cells = [model, mode or "-", prof] + ([] if one_scope else [scope])
        table.add_row(*cells, *[_fmt(v) for v in values], str(int(df.loc[key, ("run", "id")])))
    # wide enough for the whole table even when stdout is not a terminal (80 columns by default)
    Console(width=max(console.width, 140)).print(table)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="eval")


# The analysis commands (knn, linear, ablation) of eval/ join this group when present.
try:
    from cbir_pg.app.cli import analysis

    analysis.register_eval(app)
except ImportError:
    pass
