"""``--scale``: evaluation as the index grows (issue 19, "P3 and scale").

For each index size of a series: a synthetic dataset of clustered 768-d unit vectors with labels (P3's
generator: 1,000 clusters, 20 classes, 20% label noise; index split ``train``, queries ``test``), loaded by
binary COPY and indexed by the product (:func:`cbir_pg.index.build_index`: default storage, m = 16,
ef_construction = 64). Measured per size (:func:`bench.p3_eval.run_size`):

- HNSW build time, index size (``pg_relation_size``), the ``maintenance_work_mem`` and parallel workers the
  build ran with;
- at each ``ef_search`` of a small grid: the product's SQL-HNSW evaluation (``eval.topn.topn(mode="ann")``)
  in queries/s against exact FAISS ``IndexFlatIP`` on the same vectors, |dP@N| (N = 1, 3, 5, 10, micro),
  recall@10 against exact, and the p50/p95 latency of a single top-10 statement.

From the curve: the evaluation's default ``ef_search`` per index size (:func:`ef_table`, the smallest
measured value with max |dP@N| <= 0.002; compare ``cbir_pg.rules.EVAL_EF_SEARCH_BY_VECTORS``), the size
where SQL-HNSW overtakes exact FAISS (:func:`crossing`), and the target: SQL-HNSW >= 1.5x exact FAISS at
200,000 vectors. A benchmark, never a test: it runs from ``python -m bench.run --scale``.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from bench.p3_eval import TARGET_DELTA, P3Setup, run_size

#: issue 19: SQL-HNSW evaluation at least this many times exact FAISS's queries/s at TARGET_SIZE
TARGET_SPEEDUP = 1.5
TARGET_SIZE = 200_000
DEFAULT_SIZES = [20_000, 50_000, 100_000, 200_000]
DEFAULT_EF = [40, 80, 160, 320]


def best_within_delta(s: dict[str, Any], delta: float = TARGET_DELTA) -> dict[str, Any] | None:
    """The smallest measured ``ef_search`` of one size whose max |dP@N| is within ``delta``."""
    ok = [r for r in s["runs"] if r["max_abs_delta_p"] <= delta]
    return min(ok, key=lambda r: r["ef_search"]) if ok else None


def ef_table(per_size: list[dict[str, Any]], delta: float = TARGET_DELTA) -> list[list[int]]:
    """``[[graph vectors, ef_search], ...]`` by size: the smallest measured ``ef_search`` with max
    |dP@N| <= ``delta``, made non-decreasing with size (a larger graph never gets a smaller value, so
    noise at one size cannot lower it). The table stops at the first size where no value qualified: beyond
    it the measurement supports nothing."""
    out: list[list[int]] = []
    floor = 0
    for s in sorted(per_size, key=lambda s: s["graph_vectors"]):
        b = best_within_delta(s, delta)
        if b is None:
            break
        floor = max(floor, int(b["ef_search"]))
        out.append([int(s["graph_vectors"]), floor])
    return out


def _speedup_at(s: dict[str, Any]) -> float | None:
    b = best_within_delta(s)
    return b["speedup_vs_exact"] if b else None


def crossing(per_size: list[dict[str, Any]]) -> dict[str, Any]:
    """The index size where SQL-HNSW evaluation (at each size's chosen ``ef_search``) overtakes exact
    FAISS: the first measured size with speedup >= 1, and the log-log interpolation between it and the
    size below."""
    pts = [(s["size"], _speedup_at(s)) for s in sorted(per_size, key=lambda s: s["size"])]
    pts = [(n, v) for n, v in pts if v is not None]
    for i, (n, v) in enumerate(pts):
        if v >= 1.0:
            if i == 0:
                return {"reached": True, "first_measured_size": n, "interpolated_size": None}
            n0, v0 = pts[i - 1]
            t = (0.0 - math.log(v0)) / (math.log(v) - math.log(v0)) if v != v0 else 0.0
            est = math.exp(math.log(n0) + t * (math.log(n) - math.log(n0)))
            return {"reached": True, "first_measured_size": n, "interpolated_size": int(round(est, -3))}
    return {"reached": False, "first_measured_size": None, "interpolated_size": None}


def target(per_size: list[dict[str, Any]]) -> dict[str, Any]:
    """SQL-HNSW >= 1.5x exact FAISS at 200,000 vectors (within |dP@N| <= 0.002); ``passed`` is ``None``
    when 200,000 was not measured."""
    s = next((s for s in per_size if s["size"] == TARGET_SIZE), None)
    if s is None:
        return {"size": TARGET_SIZE, "measured": False, "speedup": None, "passed": None}
    v = _speedup_at(s)
    return {
        "size": TARGET_SIZE,
        "measured": True,
        "speedup": v,
        "passed": v is not None and v >= TARGET_SPEEDUP,
    }


def run_scale(
    dsn: str,
    *,
    sizes: list[int],
    n_queries: int,
    dim: int,
    ef_values: list[int],
    latency_queries: int = 500,
    connections: int = 2,
    log=print,
) -> dict[str, Any]:
    per_size = []
    for size in sizes:
        t0 = time.perf_counter()
        s = run_size(
            dsn,
            P3Setup(n_queries, dim, connections=connections),
            size=size,
            ef_values=ef_values,
            key_prefix="scale",
            latency_queries=min(latency_queries, n_queries),
            drop_after=True,
            log=log,
        )
        s["seconds"] = round(time.perf_counter() - t0, 1)
        per_size.append(s)
        log(f"  scale {size:,}: {s['seconds']:.0f}s")
    return {
        "sizes": sizes,
        "n_queries": n_queries,
        "dim": dim,
        "ef_values": ef_values,
        "latency_queries": min(latency_queries, n_queries),
        "delta": TARGET_DELTA,
        "per_size": per_size,
        "ef_table": ef_table(per_size),
        "crossing": crossing(per_size),
        "target": target(per_size),
    }


def _log_log_panel(ax, ylabel: str, title: str) -> None:
    """Log-log axes over the index size, with a grid and a legend."""
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("index vectors")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)


def plot(scale: dict[str, Any], path: Path, title: str = "") -> Path:
    """Log-log plot: evaluation queries/s (SQL-HNSW at each ef_search, exact FAISS) and HNSW build time
    against index size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ps = sorted(scale["per_size"], key=lambda s: s["size"])
    xs = [s["size"] for s in ps]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    for ef in scale["ef_values"]:
        ys = [next((r["sql_qps"] for r in s["runs"] if r["ef_search"] == ef), math.nan) for s in ps]
        a.plot(xs, ys, marker="o", label=f"SQL-HNSW ef_search {ef}")
    a.plot(xs, [s["exact_faiss_qps"] for s in ps], marker="s", color="black", label="exact FAISS IndexFlatIP")
    _log_log_panel(a, "evaluation queries/s", "evaluation throughput")
    b.plot(xs, [s["hnsw_build_s"] for s in ps], marker="o", label="HNSW build (pgvector)")
    _log_log_panel(b, "seconds", "HNSW build time")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
