"""``cbir-pg eval``: the retrieval benchmark (top-N in SQL, P@N in Python, stored) and the Table 2 view."""

from __future__ import annotations

import math
from enum import Enum

import typer

from cbir_pg.app.cli._common import check_split, database, err_console, parse_int_list, split_names
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
    model: str = typer.Option(None, "--model", "-m", help="encoder key, e.g. efficientnet_lite0"),
    fuse: str = typer.Option(
        None, "--fuse", help="fuse these models' rankings (KEY1,KEY2[,...]) instead of one --model"
    ),
    fusion: str = typer.Option(
        "rrf", "--fusion", help="fusion method: rrf (reciprocal rank) or mean (cosine)"
    ),
    rrf_c: float = typer.Option(60.0, "--rrf-c", help="the c of reciprocal rank fusion, 1/(c + rank)"),
    candidates: int = typer.Option(
        None,
        "--candidates",
        help="K': candidates per model (fusion) or re-ranked (--rerank); default: the SQL's",
    ),
    expand: str = typer.Option(
        None, "--expand", help="alpha query expansion with M,ALPHA: the query plus its top M index neighbours"
    ),
    rerank: str = typer.Option(
        None,
        "--rerank",
        help="k-reciprocal re-ranking with K1,LAMBDA (e.g. 20,0.3); one model only",
        show_default=False,
    ),
    n: str = typer.Option("1,3,5,10", "--n", help="cut-offs N, comma-separated"),
    index_split: str = typer.Option(
        None, "--index-split", callback=check_split, help="split(s) searched, comma-separated [train]"
    ),
    query_split: str = typer.Option(
        None,
        "--query-split",
        callback=check_split,
        help="split(s) of the query images, comma-separated [test]",
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
    relevance: str = typer.Option(
        "labels",
        "--relevance",
        help="labels (same label = relevant), or judgements: the radiologists' verdicts where they exist",
    ),
    fmt: Format = format_option(),
) -> None:
    """Top-N retrieval of every query image against the index images, in SQL; prints and stores P@N.

    With --fuse, --expand or --rerank the ranking comes from the SQL API of sql/schema/25_fusion.sql and is
    stored as its own leaderboard row (its model column names the members, the method and the options)."""
    from cbir_pg.errors import ConfigError
    from cbir_pg.eval.retrieval import evaluate_retrieval
    from cbir_pg.profiles import get_profile

    prof = get_profile(profile)
    index_split = index_split or ",".join(prof.index_splits)
    query_split = query_split or ",".join(prof.query_splits)
    mode = mode or prof.search_mode

    if fuse is not None or expand is not None or rerank is not None:
        if compare_exact:
            raise ConfigError("--compare-exact runs for a single model: use --mode ann or --mode exact")
        if prof.name != "default":
            raise ConfigError(
                f"--profile {prof.name} applies to a single --model, not --fuse/--expand/--rerank"
            )
        _ranking_eval(
            ctx,
            model,
            fuse,
            fusion,
            rrf_c,
            candidates,
            expand,
            rerank,
            n,
            index_split,
            query_split,
            dataset,
            mode,
            ef_search,
            fmt,
        )
        return
    if model is None:
        raise ConfigError("give --model KEY (or --fuse KEY1,KEY2)")
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
        relevance=relevance,
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
    j = result.judged
    if j is not None:
        say(
            f"relevance from judgements: {j.n_judged_queries} of {j.n_queries} queries have judgements "
            f"({j.n_judged_pairs} judged neighbours in their top {max(result.ns)}, {j.n_disagreements} "
            "disagree with the labels); unjudged neighbours count by label",
            fmt,
        )
        for label, values in (("judged queries", j.judged_micro), ("labels only", j.label_micro)):
            rows.append(
                {
                    "run": p.run_id,
                    "mode": label,
                    "average": "micro",
                    **dict(zip(result.ns, values, strict=True)),
                }
            )
    cols = [Col("run", right=True), Col("mode"), Col("average")] + [
        Col(f"p{cut}", lambda row, c=cut: row[c], _fmt, right=True, header=f"P@{cut}") for cut in result.ns
    ]
    emit(rows, cols, fmt)
    for m in order:
        r = result.runs[m]
        ef = f", ef_search {r.ef_search}" if r.ef_search is not None else ""
        say(f"{m}: run {r.run_id}, {r.queries_per_second:,.0f} queries/s ({r.seconds:.1f} s){ef}", fmt)


def _pair(text: str, what: str, first=int) -> tuple:
    from cbir_pg.errors import ConfigError

    parts = [x.strip() for x in text.split(",")]
    try:
        if len(parts) != 2:
            raise ValueError
        return first(parts[0]), float(parts[1])
    except ValueError:
        raise ConfigError(f"{what}: expected two comma-separated numbers, got {text!r}") from None


def _ranking_eval(
    ctx,
    model,
    fuse,
    fusion,
    rrf_c,
    candidates,
    expand,
    rerank,
    n,
    index_split,
    query_split,
    dataset,
    mode,
    ef_search,
    fmt: Format,
) -> None:
    from cbir_pg.errors import ConfigError
    from cbir_pg.eval.fusion import Ranking, evaluate_ranking

    if fuse is not None and model is not None:
        raise ConfigError("give --model KEY or --fuse KEY1,KEY2, not both")
    models = split_names([fuse]) if fuse is not None else ([model] if model else [])
    if fuse is not None and len(models) < 2:
        raise ConfigError(f"--fuse needs at least two models, got {fuse!r}")
    if not models:
        raise ConfigError("give --model KEY or --fuse KEY1,KEY2")
    index_splits = split_names([index_split])
    if len(index_splits) != 1:
        raise ConfigError("--fuse/--expand/--rerank search one index split")
    ranking = Ranking(
        models=tuple(models),
        fusion=fusion,
        c=rrf_c,
        candidates=candidates,
        expand=_pair(expand, "--expand M,ALPHA") if expand else None,
        rerank=_pair(rerank, "--rerank K1,LAMBDA") if rerank else None,
    )
    r = evaluate_ranking(
        database(ctx),
        ranking,
        ns=parse_int_list(n),
        index_split=index_splits[0],
        query_splits=split_names([query_split]),
        datasets=split_names(dataset) or None,
        mode=mode,
        ef_search=ef_search,
    )
    for w in r.warnings:
        err_console.print(f"warning: {w}", markup=False, highlight=False)
    say(f"{r.model}: {r.n_queries} queries against {r.n_index} index images", fmt)
    rows = [
        {"run": r.run_id, "mode": r.mode, "average": avg, **dict(zip(r.ns, values, strict=True))}
        for avg, values in (("micro", r.summary.micro), ("macro", r.summary.macro))
    ]
    cols = [Col("run", right=True), Col("mode"), Col("average")] + [
        Col(f"p{cut}", lambda row, c=cut: row[c], _fmt, right=True, header=f"P@{cut}") for cut in r.ns
    ]
    emit(rows, cols, fmt)
    qps = r.n_queries / r.seconds if r.seconds > 0 else float("inf")
    say(f"{r.mode}: run {r.run_id}, {qps:,.0f} queries/s ({r.seconds:.1f} s)", fmt)


@app.command()
def zeroshot(
    ctx: typer.Context,
    model: str = typer.Option(..., "--model", "-m", help="an image-text encoder key, e.g. biomedclip"),
    template: str = typer.Option(
        "a {modality} image of {finding} in the {region}",
        "--template",
        help="prompt per class; fields {modality} {region} {finding} {key}",
    ),
    n: str = typer.Option("1,3,5,10", "--n", help="cut-offs N, comma-separated"),
    split: str = typer.Option(
        "test", "--split", callback=check_split, help="the images searched and classified"
    ),
    dataset: str = typer.Option(None, "--dataset", "-d", help="one dataset key; default: all"),
    mode: str = typer.Option("exact", "--mode", help="exact (sequential scan) or ann (HNSW)"),
    weights: str = typer.Option(None, "--weights", help="checkpoint of the image-text model"),
    fmt: Format = format_option(),
) -> None:
    """Text-to-image retrieval (one prompt per class, P@N) and zero-shot classification accuracy; stored."""
    from cbir_pg.eval.zeroshot import evaluate_zeroshot

    r = evaluate_zeroshot(
        database(ctx),
        model,
        template=template,
        ns=parse_int_list(n),
        split=split,
        datasets=[dataset] if dataset else None,
        mode=mode,
        weights=weights,
    )
    rows = [
        {
            "class": key,
            "prompt": r.prompts[i],
            "images": r.class_sizes[i],
            **{f"p{cut}": float(r.class_precision[i, j]) for j, cut in enumerate(r.ns)},
            "accuracy": float(r.class_accuracy[i]),
        }
        for i, key in enumerate(r.classes)
    ]
    rows.append(
        {
            "class": "mean",
            "prompt": None,
            "images": r.n_images,
            **{f"p{cut}": float(r.mean_precision[j]) for j, cut in enumerate(r.ns)},
            "accuracy": r.balanced_accuracy,
        }
    )
    cols = [Col("class"), Col("prompt"), Col("images", right=True)]
    cols += [Col(f"p{cut}", fmt=_fmt, right=True, header=f"P@{cut}") for cut in r.ns]
    cols.append(Col("accuracy", fmt=_fmt, right=True))
    emit(rows, cols, fmt)
    say(
        f"zero-shot accuracy {_fmt(r.accuracy)} (balanced {_fmt(r.balanced_accuracy)}) on {r.n_images} "
        f"{split} images; run {r.run_id}",
        fmt,
    )


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
    out: str = typer.Option(..., "--out", "-o", help="folder for runs, neighbours and metrics files"),
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

# The comparison commands (compare, compare-paper, compare-neighbours) join this group too.
from cbir_pg.app.cli import compare as _compare  # noqa: E402

_compare.register_eval(app)
