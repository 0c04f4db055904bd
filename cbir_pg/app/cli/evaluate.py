"""``cbir-pg eval``: the retrieval benchmark (top-N in SQL, P@N in Python, stored) and the Table 2 view."""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

import typer

from cbir_pg.app.cli._common import (
    check_split,
    database,
    err_console,
    names_or_all,
    parse_int_list,
    split_names,
)
from cbir_pg.app.cli.options import Connections, Cutoffs, ModelKey, SearchMode
from cbir_pg.app.cli.output import Col, Format, emit, format_option, print_line, say

app = typer.Typer(
    help="Evaluation: retrieval P@N (SQL top-N), stored runs, the paper's Table 2.", no_args_is_help=True
)


def _fmt(x: float | None, signed: bool = False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:+.4f}" if signed else f"{x:.4f}"


# one piece: typer declares its options in the signature
@app.command()
def retrieval(
    ctx: typer.Context,
    model: ModelKey = None,
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
    n: Cutoffs = "1,3,5,10",
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
    mode: SearchMode = None,
    ef_search: int = typer.Option(None, "--ef-search", help="hnsw.ef_search (raised to at least max N)"),
    compare_exact: bool = typer.Option(
        False, "--compare-exact/--no-compare-exact", help="run ann and exact; report recall and ΔP@N"
    ),
    connections: Connections = 2,
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
    from cbir_pg.profiles import get_profile

    prof = get_profile(profile)
    opts = RankingOptions(
        model=model,
        fuse=fuse,
        fusion=fusion,
        rrf_c=rrf_c,
        candidates=candidates,
        expand=expand,
        rerank=rerank,
        n=n,
        index_split=index_split or ",".join(prof.index_splits),
        query_split=query_split or ",".join(prof.query_splits),
        dataset=dataset,
        mode=mode or prof.search_mode,
        ef_search=ef_search,
    )
    if opts.is_ranking:
        if compare_exact:
            raise ConfigError("--compare-exact runs for a single model: use --mode ann or --mode exact")
        if prof.name != "default":
            raise ConfigError(
                f"--profile {prof.name} applies to a single --model, not --fuse/--expand/--rerank"
            )
        _ranking_eval(ctx, opts, fmt)
        return
    if model is None:
        raise ConfigError("give --model KEY (or --fuse KEY1,KEY2)")
    _single_model_eval(
        ctx,
        opts,
        fmt,
        compare_exact=compare_exact,
        batch_size=batch_size,
        connections=connections,
        progress=progress,
        profile=prof.name,
        relevance=relevance,
    )


def _p_at_n_columns(ns) -> list[Col]:
    """The run, mode and average columns, then one P@N column per cut-off."""
    return [Col("run", right=True), Col("mode"), Col("average")] + [
        Col(f"p{cut}", lambda row, c=cut: row[c], _fmt, right=True, header=f"P@{cut}") for cut in ns
    ]


def _row(run_id, mode: str, average: str, ns, values) -> dict:
    return {"run": run_id, "mode": mode, "average": average, **dict(zip(ns, values, strict=True))}


def _warn(warnings) -> None:
    for w in warnings:
        err_console.print(f"warning: {w}", markup=False, highlight=False)


def _single_model_eval(ctx, opts: RankingOptions, fmt: Format, **settings) -> None:
    """One model's stored P@N run(s): ``settings`` are evaluate_retrieval's own (exact comparison,
    batching, connections, progress, profile, relevance)."""
    from cbir_pg.eval.retrieval import evaluate_retrieval

    result = evaluate_retrieval(
        database(ctx),
        opts.model,
        ns=parse_int_list(opts.n),
        index_splits=split_names([opts.index_split]),
        query_splits=split_names([opts.query_split]),
        datasets=names_or_all(opts.dataset),
        mode=opts.mode,
        ef_search=opts.ef_search,
        **settings,
    )
    _warn(result.warnings)
    p = result.primary
    scope = ", ".join(result.index_filter.datasets) if result.index_filter.datasets else "all datasets"
    say(
        f"model {result.model}: {p.n_queries} queries ({'/'.join(result.query_splits)}) against {p.n_index} index "
        f"images ({'/'.join(result.index_filter.splits or ())}), {scope}, profile {settings['profile']}",
        fmt,
    )
    if result.judged is not None:
        j = result.judged
        say(
            f"relevance from judgements: {j.n_judged_queries} of {j.n_queries} queries have judgements "
            f"({j.n_judged_pairs} judged neighbours in their top {max(result.ns)}, {j.n_disagreements} "
            "disagree with the labels); unjudged neighbours count by label",
            fmt,
        )
    emit(_retrieval_rows(result), _p_at_n_columns(result.ns), fmt)
    for m in [m for m in ("ann", "exact") if m in result.runs]:
        r = result.runs[m]
        ef = f", ef_search {r.ef_search}" if r.ef_search is not None else ""
        say(f"{m}: run {r.run_id}, {r.queries_per_second:,.0f} queries/s ({r.seconds:.1f} s){ef}", fmt)


def _retrieval_rows(result) -> list[dict]:
    """The table: micro and macro P@N per run, then ann-vs-exact recall and deltas, then the judged split."""
    ns = result.ns
    rows = []
    for m in [m for m in ("ann", "exact") if m in result.runs]:
        r = result.runs[m]
        rows += [
            _row(r.run_id, m, "micro", ns, r.summary.micro),
            _row(r.run_id, m, "macro", ns, r.summary.macro),
        ]
    if result.recall is not None and result.delta_micro is not None and result.delta_macro is not None:
        ann = result.runs["ann"].run_id
        rows += [
            _row(ann, "ann vs exact", "recall", ns, result.recall),
            _row(ann, "ann - exact", "delta micro", ns, result.delta_micro),
            _row(ann, "ann - exact", "delta macro", ns, result.delta_macro),
        ]
    if result.judged is not None:
        run = result.primary.run_id
        rows += [
            _row(run, "judged queries", "micro", ns, result.judged.judged_micro),
            _row(run, "labels only", "micro", ns, result.judged.label_micro),
        ]
    return rows


def _pair(text: str, what: str, first=int) -> tuple:
    from cbir_pg.errors import ConfigError

    parts = [x.strip() for x in text.split(",")]
    try:
        if len(parts) != 2:
            raise ValueError
        return first(parts[0]), float(parts[1])
    except ValueError:
        raise ConfigError(f"{what}: expected two comma-separated numbers, got {text!r}") from None


@dataclass(frozen=True)
class RankingOptions:
    """``cbir-pg eval retrieval``'s options as typed (the profile's defaults filled in)."""

    model: str | None
    fuse: str | None
    fusion: str
    rrf_c: float
    candidates: int | None
    expand: str | None
    rerank: str | None
    n: str
    index_split: str
    query_split: str
    dataset: list[str] | None
    mode: str
    ef_search: int | None

    @property
    def is_ranking(self) -> bool:
        """Whether the ranking comes from the fusion SQL API (--fuse, --expand or --rerank)."""
        return self.fuse is not None or self.expand is not None or self.rerank is not None

    def ranking(self):
        """The :class:`cbir_pg.eval.fusion.Ranking` these options ask for, or a one-line error."""
        from cbir_pg.errors import ConfigError
        from cbir_pg.eval.fusion import Ranking

        if self.fuse is not None and self.model is not None:
            raise ConfigError("give --model KEY or --fuse KEY1,KEY2, not both")
        models = split_names([self.fuse]) if self.fuse is not None else ([self.model] if self.model else [])
        if self.fuse is not None and len(models) < 2:
            raise ConfigError(f"--fuse needs at least two models, got {self.fuse!r}")
        if not models:
            raise ConfigError("give --model KEY or --fuse KEY1,KEY2")
        return Ranking(
            models=tuple(models),
            fusion=self.fusion,
            c=self.rrf_c,
            candidates=self.candidates,
            expand=_pair(self.expand, "--expand M,ALPHA") if self.expand else None,
            rerank=_pair(self.rerank, "--rerank K1,LAMBDA") if self.rerank else None,
        )


def _ranking_eval(ctx, opts: RankingOptions, fmt: Format) -> None:
    from cbir_pg.errors import ConfigError
    from cbir_pg.eval.fusion import evaluate_ranking

    ranking = opts.ranking()
    index_splits = split_names([opts.index_split])
    if len(index_splits) != 1:
        raise ConfigError("--fuse/--expand/--rerank search one index split")
    r = evaluate_ranking(
        database(ctx),
        ranking,
        ns=parse_int_list(opts.n),
        index_split=index_splits[0],
        query_splits=split_names([opts.query_split]),
        datasets=names_or_all(opts.dataset),
        mode=opts.mode,
        ef_search=opts.ef_search,
    )
    _warn(r.warnings)
    say(f"{r.model}: {r.n_queries} queries against {r.n_index} index images", fmt)
    rows = [
        _row(r.run_id, r.mode, avg, r.ns, v)
        for avg, v in (("micro", r.summary.micro), ("macro", r.summary.macro))
    ]
    emit(rows, _p_at_n_columns(r.ns), fmt)
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
    n: Cutoffs = "1,3,5,10",
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
