"""``cbir-pg report``: PNG figures and an ``index.html`` that ties them together.

* Fig. 3A ``fig3a_class_p1_vs_size_<model>.png``: per-class P@1 against index class size, anatomical
  and pathological classes in two colours. Source, in order: the latest retrieval run
  (``cbir_report.class_precision``), the latest kNN run (per-class P@1 stored by ``eval knn``), else a
  top-1 search of the test images against the train images computed on the spot.
* Fig. 3B ``fig3b_ablation.png``: P@1 against index images per class, one curve per model (latest
  ablation run per model, mean over seeds, error bars = standard deviation).
* Fig. 5 ``fig5_tsne_<model>.png``: t-SNE of a seeded sample of embeddings, three panels coloured by
  modality, by body region and by class.
* Fig. 2 ``fig2_retrievals_<model>.png``: sampled test queries and their 5 nearest train images (one
  row per query, drawn by :func:`cbir_pg.search.draw_grid`).
* Tables: the retrieval leaderboard (``cbir_report.leaderboard``, skipped when absent) and Table 4
  (kNN and linear probe: micro/macro F1, AUPRC, AUROC).

Figures that have no data are skipped; :attr:`ReportResult.notes` says which and why.

A figure is redrawn only when its inputs changed: each PNG carries the hash of what it was drawn from
(:func:`inputs_hash`: the rows or vectors it plots, its parameters, this module's source and the plotting
libraries' versions) in a ``tEXt`` chunk, and a figure whose stored hash matches is kept as it is
(:attr:`ReportResult.reused`). The data are still read (that is cheap); the t-SNE and the drawing, which
are not, are skipped. A second ``cbir-pg demo`` thus rewrites only ``index.html``.
"""

from __future__ import annotations

import functools
import hashlib
import html
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cbir_pg.db.database import Database, scalar
from cbir_pg.errors import ConfigError
from cbir_pg.eval import data

if TYPE_CHECKING:
    from cbir_pg.eval.topn import TopN

KIND_COLOURS = {"anatomical": "#1f77b4", "pathological": "#d62728"}
GRID_NEIGHBOURS = 5
#: the PNG ``tEXt`` key under which a figure stores the hash of its inputs
INPUTS_KEY = "cbir-pg inputs"


@dataclass
class ReportResult:
    out_dir: Path
    index: Path
    figures: list[Path] = field(default_factory=list)
    models: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    reused: list[Path] = field(default_factory=list)  # figures kept because their inputs had not changed


@functools.cache
def _code_fingerprint() -> str:
    """What else decides a figure's pixels: this module's and the grid drawer's source, and the versions
    of the libraries that draw (read from package metadata, so nothing heavy is imported)."""
    from importlib.metadata import PackageNotFoundError, version

    from cbir_pg import search

    h = hashlib.sha256()
    for f in (Path(__file__), Path(search.__file__)):
        h.update(f.read_bytes())
    for dist in ("matplotlib", "pillow", "scikit-learn", "numpy"):
        try:
            h.update(f"{dist}={version(dist)};".encode())
        except PackageNotFoundError:
            h.update(f"{dist}=-;".encode())
    return h.hexdigest()


def inputs_hash(name: str, *parts: object) -> str:
    """SHA-256 of a figure's name, everything it is drawn from (arrays by dtype, shape and bytes, other
    values by ``repr``) and :func:`_code_fingerprint`."""
    h = hashlib.sha256(_code_fingerprint().encode())
    h.update(name.encode())
    for part in parts:
        if isinstance(part, np.ndarray):
            h.update(f"{part.dtype}{part.shape}".encode())
            h.update(np.ascontiguousarray(part).tobytes())
        else:
            h.update(repr(part).encode())
        h.update(b"\0")
    return h.hexdigest()


def stored_inputs_hash(path: Path) -> str | None:
    """The inputs hash a figure was written with, or None (no file, not a PNG, drawn before hashes)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return getattr(im, "text", {}).get(INPUTS_KEY)
    except (OSError, ValueError):
        return None


def _cached(result: ReportResult, path: Path, key: str, draw: Callable[[str], Path | None]) -> Path | None:
    """``path`` as it is when it was drawn from the same inputs (``key``), else ``draw(key)``, which
    writes the figure with ``key`` in its metadata."""
    if stored_inputs_hash(path) == key:
        result.reused.append(path)
        return path
    return draw(key)


def _png_metadata(inputs: str | None) -> dict[str, str]:
    return {INPUTS_KEY: inputs} if inputs else {}


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _rows(conn, query, params=None) -> tuple[list[str], list[list]]:
    """Column names and the rows' values in those columns' order (for an HTML table)."""
    cur = conn.execute(query, params or {})
    names = [d.name for d in cur.description]
    return names, [[r[n] for n in names] for r in cur.fetchall()]


def _view_exists(conn, name: str) -> bool:
    return bool(scalar(conn, data.q("view_exists"), {"name": name}))


# --------------------------------------------------------------------------- Fig. 3A
def _class_p1(db: Database, model: str) -> tuple[list[tuple], str]:
    """``[(class key, kind, index class size, P@1, queries)]`` and where they came from."""
    with db.connection() as conn:
        if _view_exists(conn, "cbir_report.class_precision"):
            rows = conn.execute(
                "select class, kind, class_index_size, p1, n_queries, mode, scope from cbir_report.class_precision"
                " where model = %s and p1 is not null order by (mode = 'exact') desc, scope, class",
                (model,),
            ).fetchall()
            if rows:
                first = (rows[0]["mode"], rows[0]["scope"])
                return [
                    (r["class"], r["kind"], int(r["class_index_size"]), float(r["p1"]), int(r["n_queries"]))
                    for r in rows
                    if (r["mode"], r["scope"]) == first
                ], f"latest retrieval run ({first[0]}, {first[1]})"
        if _view_exists(conn, "cbir_report.knn_results"):
            rows = conn.execute(data.q("report_class_p1"), {"model": model}).fetchall()
            if rows:
                return [
                    (r["key"], r["kind"], int(r["class_index_size"]), float(r["value"])) for r in rows
                ], "latest kNN run"
        labels = {r["id"]: (r["key"], r["kind"]) for r in conn.execute(data.q("label_keys")).fetchall()}
    from cbir_pg.eval.topn import IndexFilter, topn

    test = data.split_ids(db, model, "test")
    if test.ids.size == 0:
        return [], "no test images"
    res = topn(
        db,
        model,
        query_ids=test.ids,
        index_filter=IndexFilter(splits=("train",)),
        n=1,
        mode="exact",
        progress=False,
    )
    out = []
    for c in np.unique(test.labels):
        sel = test.labels == c
        size = res.index_class_sizes.get(int(c), 0)
        if size:
            key, kind = labels[int(c)]
            out.append((key, kind, size, float(np.mean(res.neighbour_labels[sel, 0] == c)), int(sel.sum())))
    return out, "top-1 search of test against train, computed for this report"


def log_ticks(lo: float, hi: float, at_least: int = 3) -> list[float]:
    """Tick positions for a log axis over ``[lo, hi]``: 1-2-5 steps per decade, or, when the data span
    too little of a decade for ``at_least`` of those, evenly spaced (in log) values rounded to two
    significant digits, so the axis always carries several labelled ticks."""
    lo, hi = max(float(lo), 1e-9), max(float(hi), float(lo) * 1.0001)
    decades = range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
    ticks = [m * 10.0**d for d in decades for m in (1, 2, 5) if lo <= m * 10.0**d <= hi]
    if len(ticks) >= at_least:
        return ticks
    out = []
    for v in np.geomspace(lo, hi, max(at_least, 4)):
        digits = -int(math.floor(math.log10(v))) + 1
        r = round(float(v), digits)
        if r not in out:
            out.append(r)
    return out


def _log_x(ax, values: Sequence[float]) -> None:
    """Log x-axis with several plain-number labelled ticks (see :func:`log_ticks`), no minor labels."""
    from matplotlib.ticker import FixedLocator, NullFormatter, NullLocator, StrMethodFormatter

    ax.set_xscale("log")
    lo, hi = min(values), max(values)
    pad = (hi / lo) ** 0.06 if hi > lo else 1.3
    ax.set_xlim(lo / pad, hi * pad)
    ax.xaxis.set_major_locator(FixedLocator(log_ticks(lo / pad, hi * pad)))
    ax.xaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_minor_formatter(NullFormatter())


def fig3a(
    points: list[tuple],
    model: str,
    path: Path,
    source: str,
    inputs: str | None = None,
) -> Path:
    """Per-class P@1 against index class size; ``points``: ``(class, kind, index size, P@1[, queries])``,
    each class labelled with its number of queries when known (up to 25 classes)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.6), dpi=120)
    for kind, colour in KIND_COLOURS.items():
        pts = [p for p in points if p[1] == kind]
        if pts:
            ax.scatter(
                [p[2] for p in pts],
                [p[3] for p in pts],
                c=colour,
                label=kind,
                s=36,
                alpha=0.85,
                edgecolors="none",
            )
    if len(points) <= 25:
        for key, _kind, size, p1, *queries in points:
            text = f"{key} ({queries[0]:,} queries)" if queries and queries[0] is not None else key
            ax.annotate(text, (size, p1), fontsize=8, xytext=(4, 3), textcoords="offset points")
    _log_x(ax, [p[2] for p in points])
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel("index images of the class")
    ax.set_ylabel("P@1")
    ax.set_title(f"Per-class P@1 vs index class size: {model}", fontsize=10)
    ax.text(0.01, 0.01, source, transform=ax.transAxes, fontsize=7, color="grey")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, metadata=_png_metadata(inputs))
    plt.close(fig)
    return path


# --------------------------------------------------------------------------- Fig. 3B
def fig3b(rows: list[dict], path: Path, inputs: str | None = None) -> Path:
    """``rows``: ``report_ablation`` rows (model, index_size, p_at_1, sd, n_seeds)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.6), dpi=120)
    by_model: dict[str, list[tuple]] = {}
    for r in rows:
        by_model.setdefault(r["model"], []).append((int(r["index_size"]), float(r["p_at_1"]), float(r["sd"])))
    for model, pts in sorted(by_model.items()):
        pts.sort()
        ax.errorbar(
            [p[0] for p in pts],
            [p[1] for p in pts],
            yerr=[p[2] for p in pts],
            marker="o",
            ms=4,
            capsize=2,
            label=model,
        )
    _log_x(ax, [int(r["index_size"]) for r in rows])
    ax.set_xlabel("index images per class (N)")
    ax.set_ylabel("P@1")
    ax.set_title("Index-size ablation", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, metadata=_png_metadata(inputs))
    plt.close(fig)
    return path


# --------------------------------------------------------------------------- Fig. 5
def tsne_embed(X: np.ndarray, seed: int = 0, threads: int | None = 1) -> np.ndarray:
    """2-D t-SNE (cosine metric, PCA initialisation, seeded) of the rows of ``X``.

    ``threads`` caps the OpenMP/BLAS threads (``None``: no cap). One thread is the default: on a
    shared machine sklearn's Barnes-Hut threads can spin-wait and run >10x slower, and a sample of a
    few thousand points takes seconds on one core.
    """
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    n = X.shape[0]
    perplexity = float(max(2.0, min(30.0, (n - 1) / 3.0)))
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", metric="cosine", random_state=seed)
    with threadpool_limits(limits=threads):
        return tsne.fit_transform(X)


def facet_colours(facets: dict[str, list[str]]) -> dict[tuple[str, str], tuple]:
    """One colour per (panel, value) with no colour reused across panels, so a colour means one thing
    in the whole figure: tab20's 18 non-grey colours while they last, then evenly spaced hues (grey is
    Fig. 2's "no label")."""
    import matplotlib

    keys = [(name, v) for name, values in facets.items() for v in sorted(set(values))]
    # tab20 without its two greys (14, 15): grey means "no label" in Fig. 2 and on the page
    order = [i for i in range(0, 20, 2) if i != 14] + [i for i in range(1, 20, 2) if i != 15]
    if len(keys) <= len(order):
        cmap = matplotlib.colormaps["tab20"]
        return {k: cmap(order[i]) for i, k in enumerate(keys)}
    cmap = matplotlib.colormaps["hsv"]
    return {k: cmap(i / len(keys)) for i, k in enumerate(keys)}


def fig5(
    Y: np.ndarray, facets: dict[str, list[str]], model: str, path: Path, inputs: str | None = None
) -> Path:
    plt = _plt()
    colours = facet_colours(facets)
    fig, axes = plt.subplots(1, len(facets), figsize=(5.2 * len(facets), 6.2), dpi=110)
    for ax, (name, values) in zip(np.atleast_1d(axes), facets.items(), strict=True):
        cats = sorted(set(values))
        ax.scatter(Y[:, 0], Y[:, 1], c=[colours[(name, v)] for v in values], s=5, alpha=0.8, linewidths=0)
        ax.set_title(f"by {name} ({len(cats)})", fontsize=11)
        ax.set_xticks([])
        ax.set_yticks([])
        if len(cats) <= 24:
            handles = [
                plt.Line2D([], [], marker="o", ls="", color=colours[(name, c)], label=c, ms=7) for c in cats
            ]
            ax.legend(
                handles=handles,
                fontsize=8,
                loc="upper center",
                bbox_to_anchor=(0.5, -0.02),
                ncol=1 if len(cats) <= 4 else 2,
                frameon=False,
            )
        else:
            ax.set_xlabel(f"{len(cats)} values: too many for a legend", fontsize=8)
    fig.suptitle(f"t-SNE of {Y.shape[0]} {model} embeddings")
    fig.tight_layout()
    fig.savefig(path, bbox_inches="tight", metadata=_png_metadata(inputs))
    plt.close(fig)
    return path


# --------------------------------------------------------------------------- Fig. 2
@dataclass(frozen=True)
class GridQueries:
    """Fig. 2's inputs: the sampled test queries' exact top-N among the train images, and label names."""

    res: TopN
    labels: dict[int, str]

    def inputs_hash(self, model: str) -> str:
        r = self.res
        return inputs_hash(
            f"fig2 {model}",
            np.asarray(r.query_ids),
            np.asarray(r.query_labels),
            np.asarray(r.counts),
            np.asarray(r.neighbour_ids),
            np.asarray(r.neighbour_labels),
            np.asarray(r.similarities),
            np.asarray(r.relevant),
            sorted(self.labels.items()),
        )


def grid_queries_for(db: Database, model: str, n_queries: int, seed: int) -> GridQueries | None:
    """Sample ``n_queries`` test images (seeded) and find their exact nearest train images; None
    without test images."""
    from cbir_pg.eval.topn import IndexFilter, topn

    with db.connection() as conn:
        rows = conn.execute(
            data.q("grid_queries", model), {"split": "test", "n": n_queries, "seed": seed}
        ).fetchall()
        labels = {r["id"]: r["key"] for r in conn.execute(data.q("label_keys")).fetchall()}
    if not rows:
        return None
    res = topn(
        db,
        model,
        query_ids=[r["id"] for r in rows],
        index_filter=IndexFilter(splits=("train",)),
        n=GRID_NEIGHBOURS,
        mode="exact",
        progress=False,
    )
    return GridQueries(res, labels)


def fig2(db: Database, grid: GridQueries, path: Path, inputs: str | None = None) -> Path:
    """One :func:`draw_grid` row per sampled test query, stacked into one PNG."""
    from PIL import Image, PngImagePlugin

    from cbir_pg.search import draw_grid, image_rgb_or_placeholder

    res, labels = grid.res, grid.labels
    tmp = path.parent / f".{path.stem}_rows"
    tmp.mkdir(parents=True, exist_ok=True)
    parts = []
    try:
        with db.connection() as conn:
            for i, qid in enumerate(res.query_ids):
                k = int(res.counts[i])
                nids = res.neighbour_ids[i, :k]
                # image ids, so a case in the figure can be looked up (cbir-pg search --image-id, the page)
                captions = [f"query · id {int(qid)}\n{labels.get(int(res.query_labels[i]), '?')}"] + [
                    f"id {int(nid)}\n{labels.get(int(lab), '?')}\ncos {sim:.3f}"
                    for nid, lab, sim in zip(
                        nids, res.neighbour_labels[i, :k], res.similarities[i, :k], strict=True
                    )
                ]
                parts.append(
                    draw_grid(
                        image_rgb_or_placeholder(conn, int(qid)),  # "pixels not available"
                        [image_rgb_or_placeholder(conn, int(n)) for n in nids],
                        [bool(m) for m in res.relevant[i, :k]],
                        tmp / f"q{i}.png",
                        captions=captions,
                        tile=96,
                    )
                )
        images = [Image.open(p).convert("RGB") for p in parts]
        width = max(im.width for im in images)
        out = Image.new(
            "RGB", (width, sum(im.height for im in images) + 8 * (len(images) - 1)), (255, 255, 255)
        )
        y = 0
        for im in images:
            out.paste(im, (0, y))
            y += im.height + 8
        info = PngImagePlugin.PngInfo()
        if inputs:
            info.add_text(INPUTS_KEY, inputs)
        frame_legend(out, COS_NOTE).save(path, pnginfo=info)
    finally:
        for p in tmp.glob("*.png"):
            p.unlink()
        tmp.rmdir()
    return path


FRAME_LEGEND = (("query", "ORANGE"), ("same class", "GREEN"), ("other class", "RED"), ("no label", "GREY"))
#: what "cos" under each neighbour of Fig. 2 is
COS_NOTE = (
    "cos = cosine similarity of the model's embeddings (1 = same direction; scales differ between models)"
)


def frame_legend(image, note: str | None = None):
    """``image`` with a strip below it that says what each frame colour of :func:`draw_grid` means, and
    ``note`` (e.g. :data:`COS_NOTE`) on a line of its own."""
    from PIL import Image, ImageDraw

    from cbir_pg import search

    strip = 22 + (16 if note else 0)
    out = Image.new("RGB", (image.width, image.height + strip), (255, 255, 255))
    out.paste(image, (0, 0))
    draw = ImageDraw.Draw(out)
    x, y = 4, image.height + 5
    for text, name in FRAME_LEGEND:
        draw.rectangle((x, y, x + 12, y + 12), outline=getattr(search, name), width=3)
        draw.text((x + 17, y), text, fill=(0, 0, 0))
        x += 17 + int(draw.textlength(text)) + 14
    if note:
        draw.text((4, image.height + 22), note, fill=(60, 60, 60))
    return out


# --------------------------------------------------------------------------- HTML
def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return "-" if math.isnan(v) else f"{v:.4f}"
    if hasattr(v, "isoformat"):
        return v.isoformat(sep=" ", timespec="seconds")
    return str(v)


#: what a reader sees instead of a view's column name
COLUMN_NAMES = {
    "run_id": "run",
    "n_queries": "queries",
    "n_index": "index images",
    "ef_search": "ef_search (HNSW)",
    "finished_at": "finished",
    "all_embedded": "all images embedded",
}


def human_column(name: str) -> str:
    """``p1_micro`` → ``P@1 micro``, ``recall10`` → ``recall@10``, ``n_index`` → ``index images``."""
    import re

    if name in COLUMN_NAMES:
        return COLUMN_NAMES[name]
    m = re.fullmatch(r"p(\d+)_(micro|macro)", name)
    if m:
        return f"P@{m[1]} {m[2]}"
    m = re.fullmatch(r"(recall|p|ap)(\d+)", name)
    if m:
        return f"{ {'p': 'P', 'ap': 'AP'}.get(m[1], m[1]) }@{m[2]}"
    return name.replace("_", " ")


def _table(columns: Sequence[str], rows: Sequence[Sequence], header_rows: str = "") -> str:
    head = (
        header_rows + "<tr>" + "".join(f"<th>{html.escape(human_column(c))}</th>" for c in columns) + "</tr>"
    )
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table>{head}{body}</table>"


def _table4(rows: list[dict]) -> str:
    """Table 4 layout: one row per model, kNN and linear-probe column groups."""
    metrics = ["f1_micro", "f1_macro", "auprc_micro", "auprc_macro", "auroc_micro", "auroc_macro"]
    by_model: dict[str, dict[str, tuple]] = {}
    for r in rows:
        by_model.setdefault(r["model"], {})[r["method"]] = (r["k"], *(r[m] for m in metrics))
    group = "<tr><th></th><th colspan='7'>kNN (k chosen on val)</th><th colspan='6'>linear probe</th></tr>"
    cols = ["model", "k"] + [m.replace("_", " ") for m in metrics] + [m.replace("_", " ") for m in metrics]
    out = []
    for model, d in sorted(by_model.items()):
        knn = d.get("knn", (None,) + (None,) * 6)
        lin = d.get("linear", (None,) + (None,) * 6)
        out.append((model, knn[0], *knn[1:], *lin[1:]))
    return _table(cols, out, group)


CSS = """body{font-family:sans-serif;margin:2em;max-width:1200px}table{border-collapse:collapse;margin:1em 0;font-size:13px}
td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}th{background:#f3f3f3}img{max-width:100%;border:1px solid #eee}
.note{color:#666;font-size:13px}"""


@dataclass
class _Read:
    """What the report shows, read in one go: models and the report views' rows."""

    models: list[str]
    leaderboard: Any
    table4: list
    ablation: list
    zeroshot: Any
    zeroshot_class: Any
    ablation_notes: list


def _read(db: Database, models: Sequence[str] | None) -> _Read:
    with db.connection() as conn:
        known = [r["key"] for r in conn.execute(data.q("report_models")).fetchall()]
        for m in models or ():
            data.check_model(conn, m)
        leaderboard = (
            _rows(conn, data.q("leaderboard")) if _view_exists(conn, "cbir_report.leaderboard") else None
        )
        zeroshot = (
            _rows(conn, data.q("report_zeroshot")) if _view_exists(conn, "cbir_report.zeroshot") else None
        )
        return _Read(
            models=list(models) if models else known,
            leaderboard=leaderboard,
            table4=conn.execute(data.q("report_knn_linear")).fetchall(),
            ablation=conn.execute(data.q("report_ablation")).fetchall(),
            zeroshot=zeroshot,
            zeroshot_class=_rows(conn, data.q("report_zeroshot_class")) if zeroshot else None,
            ablation_notes=conn.execute(
                "select model, params -> 'notes' as notes"
                " from cbir_report.ablation a join cbir.eval_run r on r.id = a.run_id"
                " where a.is_latest group by model, r.params -> 'notes' order by model"
            ).fetchall(),
        )


def _leaderboard_section(d: _Read, result: ReportResult) -> list[str]:
    if d.leaderboard and d.leaderboard[1]:
        return ["<h2>Retrieval leaderboard (P@N)</h2>" + _table(*d.leaderboard)]
    result.notes.append("no retrieval leaderboard (run cbir-pg eval retrieval)")
    return []


def _table4_section(d: _Read, result: ReportResult) -> list[str]:
    table4 = d.table4
    if not table4:
        result.notes.append("no kNN or linear-probe results (run cbir-pg eval knn or cbir-pg eval linear)")
        return []
    complete = all(
        {r["method"] for r in table4 if r["model"] == model} >= {"knn", "linear"}
        for model in {r["model"] for r in table4}
    )
    return [
        "<h2>Table 4: kNN and linear probe (test split)</h2>"
        + _table4(table4)
        + "<p class='note'>AUPRC = average precision (one-vs-rest), not ROC-AUC."
        + (
            ""
            if complete
            else " A dash means that method has not been run for the model: the demo runs kNN only;"
            " cbir-pg eval linear --model KEY fills the linear-probe columns (cbir-pg eval knn the kNN ones)."
        )
        + "</p>"
    ]


def _zeroshot_section(d: _Read) -> list[str]:
    if not (d.zeroshot and d.zeroshot[1]):
        return []
    return [
        "<h2>Text-to-image retrieval and zero-shot classification</h2>"
        + _table(*d.zeroshot)
        + "<p class='note'>One text query per class (prompt from the template); P@N is the mean over "
        "classes; accuracy: nearest class prompt per image, balanced = mean of per-class accuracies.</p>"
        + (_table(*d.zeroshot_class) if d.zeroshot_class and d.zeroshot_class[1] else "")
    ]


def _compare_section(d: _Read, result: ReportResult, out: Path) -> list[str]:
    """One figure that compares the models (and fused rows) of one scope."""
    if not (d.leaderboard and d.leaderboard[1]):
        return []
    from cbir_pg.eval.report_compare import fig_compare_models

    cmp = fig_compare_models(d.leaderboard[0], d.leaderboard[1], out / "fig1_models.png")
    if cmp is None:
        return []
    caption = "P@1 and P@10 (micro and macro) of every model in the leaderboard, one scope"
    return ["<h2>Models compared</h2>" + _figure(result, cmp, caption)]


def _ablation_section(d: _Read, result: ReportResult, out: Path) -> list[str]:
    """Fig. 3B."""
    ablation = d.ablation
    if not ablation:
        result.notes.append("no ablation results (run cbir-pg eval ablation)")
        return []
    key = inputs_hash("fig3b", [tuple(r.values()) for r in ablation])
    p = _cached(
        result, out / "fig3b_ablation.png", key, lambda k: fig3b(ablation, out / "fig3b_ablation.png", k)
    )
    notes = "; ".join(f"{r['model']}: {'; '.join(r['notes'])}" for r in d.ablation_notes if r["notes"])
    caption = "P@1 with N index images per class" + (f". Scaled down: {notes}" if notes else "")
    return ["<h2>Fig. 3B: index-size ablation</h2>" + _figure(result, p, caption)]


def _page(models: list[str], sections: list[str], result: ReportResult) -> str:
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in result.notes)
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>cbir-pg report</title>"
        f"<style>{CSS}</style></head><body><h1>cbir-pg report</h1>"
        f"<p class='note'>Models: {html.escape(', '.join(models) or 'none')}</p>"
        + "\n".join(sections)
        + (f"<h2>Notes</h2><ul class='note'>{notes}</ul>" if notes else "")
        + "</body></html>"
    )


def write_report(
    db: Database,
    out_dir: str | Path,
    *,
    models: Sequence[str] | None = None,
    tsne_sample: int = 2000,
    grid_queries: int = 4,
    seed: int = 0,
) -> ReportResult:
    """Write the figures and ``index.html`` to ``out_dir`` and return what was written.

    Sections in order: the leaderboard, the paper beside ours and cross-split near duplicates
    (:func:`cbir_pg.eval.fidelity.report_sections`), Table 4, zero-shot, the models compared, one
    section per model, Fig. 3B; then the notes on what is missing."""
    for name, value in (("--tsne-sample", tsne_sample), ("--grid-queries", grid_queries)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"{name} must be 0 or a positive number, got {value!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    d = _read(db, models)
    result = ReportResult(out, out / "index.html", models=list(d.models))
    from cbir_pg.eval.fidelity import report_sections  # paper beside ours, cross-split near duplicates

    sections = _leaderboard_section(d, result)
    with db.connection() as conn:
        sections += report_sections(conn)
    sections += _table4_section(d, result) + _zeroshot_section(d) + _compare_section(d, result, out)
    sections += [
        _model_section(db, model, out, result, tsne_sample=tsne_sample, grid_queries=grid_queries, seed=seed)
        for model in d.models
    ]
    sections += _ablation_section(d, result, out)
    result.index.write_text(_page(d.models, sections, result), encoding="utf-8")
    return result


def _figure(result: ReportResult, path: Path, caption: str) -> str:
    """A figure with its caption, which is also the image's alt text."""
    result.figures.append(path)
    text = html.escape(caption, quote=True)
    return (
        f"<figure><img src='{html.escape(path.name, quote=True)}' alt='{text}'>"
        f"<figcaption class='note'>{text}</figcaption></figure>"
    )


def _model_section(
    db: Database,
    model: str,
    out: Path,
    result: ReportResult,
    *,
    tsne_sample: int,
    grid_queries: int,
    seed: int,
) -> str:
    """One model's figures: Fig. 3A (per-class P@1 against class size), Fig. 5 (t-SNE), Fig. 2 (grids)."""
    parts = [
        f"<h2>{html.escape(model)}</h2>",
        # Fig. 2 first, as in the paper: 2, 3A, 5
        _fig2_part(db, model, out, result, grid_queries, seed) if grid_queries > 0 else None,
        _fig3a_part(db, model, out, result),
        _fig5_part(db, model, out, result, tsne_sample, seed),
    ]
    return "\n".join(p for p in parts if p)


def _fig3a_part(db: Database, model: str, out: Path, result: ReportResult) -> str | None:
    pts, source = _class_p1(db, model)
    if not pts:
        result.notes.append(f"{model}: no per-class P@1 ({source})")
        return None
    path = out / f"fig3a_class_p1_vs_size_{model}.png"
    key = inputs_hash(f"fig3a {model}", pts, source)
    return _figure(
        result,
        _cached(result, path, key, lambda k: fig3a(pts, model, path, source, k)),
        f"Fig. 3A: per-class P@1 against index class size ({source})",
    )


def _fig5_part(
    db: Database, model: str, out: Path, result: ReportResult, tsne_sample: int, seed: int
) -> str | None:
    with db.connection() as conn:
        cur = conn.cursor(binary=True)
        cur.execute(data.q("tsne_sample", model), {"n": tsne_sample, "seed": seed})
        rows = cur.fetchall()
    if len(rows) < 10:
        result.notes.append(f"{model}: too few embeddings for a t-SNE ({len(rows)})")
        return None
    X = np.vstack(
        [
            np.asarray(
                r["embedding"].to_numpy() if hasattr(r["embedding"], "to_numpy") else r["embedding"],
                dtype=np.float32,
            )
            for r in rows
        ]
    )
    facets = {
        "modality": [r["modality"] for r in rows],
        "region": [r["region"] for r in rows],
        "class": [r["label"] for r in rows],
    }
    path = out / f"fig5_tsne_{model}.png"
    key = inputs_hash(f"fig5 {model}", X, facets, seed)
    return _figure(
        result,
        _cached(result, path, key, lambda k: fig5(tsne_embed(X, seed), facets, model, path, k)),
        f"Fig. 5: t-SNE of {len(rows)} sampled embeddings (seed {seed})",
    )


def _fig2_part(
    db: Database, model: str, out: Path, result: ReportResult, n_queries: int, seed: int
) -> str | None:
    path = out / f"fig2_retrievals_{model}.png"
    try:
        grid = grid_queries_for(db, model, n_queries, seed)
        if grid is None:
            return None
        p = _cached(result, path, grid.inputs_hash(model), lambda k: fig2(db, grid, path, k))
    except (OSError, ValueError) as exc:  # image files not readable here
        result.notes.append(
            f"{model}: no retrieval grids, images not readable ({str(exc).splitlines()[0][:120]})"
        )
        return None
    except Exception as exc:
        from cbir_pg.errors import CbirError

        if not isinstance(exc, CbirError):
            raise
        result.notes.append(f"{model}: no retrieval grids ({exc})")
        return None
    return _figure(
        result,
        p,
        f"Fig. 2: {n_queries} sampled test queries (orange) and their "
        f"{GRID_NEIGHBOURS} nearest train images (exact search), green = same class, red = other; "
        "each tile shows the image id, its class and the cosine similarity (cos) to the query",
    )
