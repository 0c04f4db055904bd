"""``cbir-pg eval``: the retrieval benchmark (top-N in SQL, P@N in Python, stored) and the Table 2 view."""

from __future__ import annotations

import math
from enum import Enum
from pathlib import Path

import typer

from cbir_pg.app.cli._common import database, err_console, parse_int_list, split_names
from cbir_pg.app.cli.output import Col, Format, emit, format_option, print_line, say

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
        False, "--compare-exact/--no-compare-exact", help="run ann and exact; report recall and ΔP@N"
    ),
    connections: int = typer.Option(2, "--connections", help="parallel database connections"),
    batch_size: int = typer.Option(256, "--batch-size", help="queries per SQL statement"),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="show a progress bar (queries/s)"),
    profile: str = typer.Option(
        "default",
        "--profile",
        help="default, or paper: the paper's protocol (test -> train, exact), recorded in the run",
    ),
    fmt: Format = format_option(),
) -> None:
    """Top-N retrieval of every query image against the index images, in SQL; prints and stores P@N."""
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
    say(
        f"model {result.model}: {p.n_queries} queries ({'/'.join(result.query_splits)}) against {p.n_index} index "
        f"images ({'/'.join(result.index_filter.splits or ())}), {scope}, profile {prof.name}",
        fmt,
    )
    rows = []
    order = [m for m in ("ann", "exact") if m in result.runs]
    for m in order:
        r = result.runs[m]
        for avg, values in (("micro", r.summary.micro), ("macro", r.summary.macro)):
            rows.append(
                {"run": r.run_id, "mode": m, "average": avg, **dict(zip(result.ns, values, strict=True))}
            )
    if result.recall is not None and result.delta_micro is not None and result.delta_macro is not None:
        ann = result.runs["ann"].run_id
        for mode, avg, values in (
            ("ann vs exact", "recall", result.recall),
            ("ann - exact", "delta micro", result.delta_micro),
            ("ann - exact", "delta macro", result.delta_macro),
        ):
            rows.append(
                {"run": ann, "mode": mode, "average": avg, **dict(zip(result.ns, values, strict=True))}
            )
    cols = [Col("run", right=True), Col("mode"), Col("average")] + [
        Col(f"p{cut}", lambda row, c=cut: row[c], _fmt, right=True, header=f"P@{cut}") for cut in result.ns
    ]
    emit(rows, cols, fmt)
    for m in order:
        r = result.runs[m]
        ef = f", ef_search {r.ef_search}" if r.ef_search is not None else ""
        say(f"{m}: run {r.run_id}, {r.queries_per_second:,.0f} queries/s ({r.seconds:.1f} s){ef}", fmt)


@app.command()
def show(ctx: typer.Context, fmt: Format = format_option()) -> None:
    """Print the paper's Table 2 (P@1/3/5/10, micro and macro) for every evaluated model."""
    from cbir_pg.eval.runs import table2

    df = table2(database(ctx))
    if df.empty and fmt == Format.table:
        print_line("no retrieval runs yet: run cbir-pg eval retrieval --model KEY")
        return
    print_table2(df, fmt)


class ExportFormat(str, Enum):
    parquet = "parquet"
    csv = "csv"


@app.command("export")
def export(
    ctx: typer.Context,
    out: Path = typer.Option(..., "--out", "-o", help="folder for runs, neighbours and metrics files"),
    fmt: ExportFormat = typer.Option(ExportFormat.parquet, "--format", help="parquet or csv"),
    run: list[int] = typer.Option(None, "--run", help="only this run id (repeatable); default: all"),
    model: str = typer.Option(None, "--model", "-m", help="only runs of this encoder"),
) -> None:
    """Write stored runs, per-query neighbours (long format) and metrics as Parquet or CSV files."""
    from cbir_pg.eval.export import export_runs

    with database(ctx).connection() as conn:
        r = export_runs(conn, out, fmt=fmt.value, run_ids=run or None, model=model)
    for table, path in r.files.items():
        print_line(f"wrote {path} ({r.rows[table]:,} rows)")


def table2_rows(df) -> tuple[list[dict], list[Col]]:
    """A :func:`cbir_pg.eval.runs.table2` frame as rows (one per model, mode and scope) and their columns."""
    from cbir_pg.eval.runs import TABLE2_NS

    rows = []
    for key in df.index:
        model, mode, scope, profile, vectors = key
        prof = profile + (" (imported)" if vectors == "imported" else "")
        row = {"model": model, "mode": mode or "-", "profile": prof, "scope": scope}
        for avg in ("micro", "macro"):
            for cut in TABLE2_NS:
                v = df.loc[key, (avg, f"P@{cut}")]
                row[f"{avg}_p{cut}"] = None if v is None or math.isnan(v) else float(v)
        row["run"] = int(df.loc[key, ("run", "id")])
        rows.append(row)
    cols = [Col("model"), Col("mode"), Col("profile"), Col("scope")]
    cols += [
        Col(f"{avg}_p{cut}", fmt=_fmt, right=True, header=f"{avg}\nP@{cut}")
        for avg in ("micro", "macro")
        for cut in TABLE2_NS
    ]
    cols.append(Col("run", right=True))
    return rows, cols


def print_table2(df, fmt: Format = Format.table) -> None:
    """Render a :func:`cbir_pg.eval.runs.table2` frame as the paper's Table 2 (also used by ``cbir-pg demo``)."""
    rows, cols = table2_rows(df)
    if fmt != Format.table:
        emit(rows, cols, fmt)
        return
    scopes = sorted({r["scope"] for r in rows})
    title = "Retrieval precision P@N (the paper's Table 2): latest run per model and mode"
    if len(scopes) == 1:
        title += f", {scopes[0]}"
        cols = [c for c in cols if c.key != "scope"]
    if all(r["profile"] == "default" for r in rows):  # the usual case: keep the table within 80 columns
        cols = [c for c in cols if c.key != "profile"]
    emit(rows, cols, fmt, title=title)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="eval")


# The analysis commands (knn, linear, ablation) of eval/ join this group when present.
try:
    from cbir_pg.app.cli import analysis

    analysis.register_eval(app)
except ImportError:
    pass
