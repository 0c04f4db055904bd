"""The report's model comparison (issue 26, item 12): one bar chart of P@1 and P@10, micro and macro, for
every model (single or fused) of the leaderboard's best-covered scope, so the models are compared in one
figure. Drawn from ``cbir_report.leaderboard`` rows as :func:`cbir_pg.eval.report.write_report` reads them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

#: the bars per model: (column, legend)
METRICS = (
    ("p1_micro", "P@1 micro"),
    ("p1_macro", "P@1 macro"),
    ("p10_micro", "P@10 micro"),
    ("p10_macro", "P@10 macro"),
)


def comparable_rows(columns: Sequence[str], rows: Sequence[Sequence]) -> tuple[str, str, list[dict]]:
    """The rows one figure may compare: one scope and one mode (ANN where it has the most models, the
    scope with the most models), the default profile, one row per model. Returns ``(scope, mode, rows)``."""
    recs = [dict(zip(columns, r, strict=True)) for r in rows]
    recs = [r for r in recs if r.get("profile", "default") == "default" and r.get("p1_micro") is not None]
    if not recs:
        return "", "", []
    counts = Counter((r["scope"], r["mode"]) for r in recs)
    (scope, mode), _ = max(counts.items(), key=lambda kv: (kv[1], kv[0][1] == "ann", kv[0][0]))
    chosen: dict[str, dict] = {}
    for r in recs:
        if (r["scope"], r["mode"]) == (scope, mode):
            chosen.setdefault(r["model"], r)
    return scope, mode, sorted(chosen.values(), key=lambda r: -float(r["p1_micro"]))


def fig_compare_models(columns: Sequence[str], rows: Sequence[Sequence], path: Path) -> Path | None:
    """Grouped horizontal bars, one group per model; ``None`` when fewer than two models are comparable."""
    import matplotlib
    import numpy as np

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    scope, mode, recs = comparable_rows(columns, rows)
    if len(recs) < 2:
        return None
    height = 0.8 / len(METRICS)
    fig, ax = plt.subplots(figsize=(8.0, 1.2 + 0.75 * len(recs)), dpi=120)
    y = np.arange(len(recs))
    for i, (col, label) in enumerate(METRICS):
        values = [float(r[col]) if r.get(col) is not None else np.nan for r in recs]
        bars = ax.barh(y + (i - (len(METRICS) - 1) / 2) * height, values, height, label=label)
        for bar, v in zip(bars, values, strict=True):
            if not np.isnan(v):
                ax.text(v + 0.005, bar.get_y() + bar.get_height() / 2, f"{v:.3f}", va="center", fontsize=7)
    ax.set_yticks(y, [r["model"] for r in recs], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1.08)
    ax.set_xlabel("precision")
    ax.set_title(f"Models compared ({mode}, {scope})", fontsize=10)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
