"""``cbir-pg eval explain``: are the similarity maps faithful? Deletion and insertion curves per method
against a random cell order, on (test query, top-1 train neighbour) pairs of the benchmark.

For each pair and method, the query's map (:func:`cbir_pg.explain.explain_pair`, against the unmasked
neighbour) orders the cells of a ``grid`` x ``grid`` tiling, most salient first
(:func:`cbir_pg.explain.saliency_order`); :func:`cbir_pg.explain.deletion_insertion` then hides (deletion)
or reveals (insertion) them in that order and records the cosine similarity to the neighbour. The
random baseline orders the cells by a seeded random permutation (``random_orders`` of them per pair).
Areas are means over pairs; a faithful method has a lower deletion area and a higher insertion area than
random. Time per map: the median wall time of one image's map (the query's) on this machine.
Results go to ``cbir.explain_faithfulness`` (``cbir_report.explain_faithfulness``), one row per method.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
from psycopg.types.json import Jsonb

from cbir_pg.db import identifiers, queries
from cbir_pg.db.database import Database
from cbir_pg.errors import ConfigError, NotFoundError


@dataclass(frozen=True)
class MethodFaithfulness:
    method: str
    n_pairs: int
    deletion_auc: float
    insertion_auc: float
    random_deletion_auc: float
    random_insertion_auc: float
    seconds_per_map: float
    #: per pair: (deletion, insertion) areas of the method and of the random orders' mean
    per_pair: list[tuple[float, float, float, float]] = field(default_factory=list, repr=False)

    @property
    def no_better_than_random(self) -> bool:
        """The rule of ``cbir_report.explain_faithfulness``: insertion minus deletion area not above
        the random order's."""
        return (self.insertion_auc - self.deletion_auc) <= (
            self.random_insertion_auc - self.random_deletion_auc
        )


@dataclass
class FaithfulnessResult:
    model: str
    grid: int
    steps: int
    device: str
    methods: list[MethodFaithfulness]
    pairs: list[tuple[int, int]]
    row_ids: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class _Curves:
    """How the curves are drawn: the tiling, the steps, the random baseline and the maps' parameters."""

    grid: int
    steps: int
    random_orders: int
    seed: int
    params: Any  # cbir_pg.explain.ExplainParams


def _benchmark_pairs(db: Database, model: str, pairs: int, device: str):
    """The stored encoder and the (query, top-1 train neighbour) pairs, ids and RGB images."""
    from cbir_pg.search import load_image_rgb, stored_encoder

    with db.connection() as conn:
        encoder = stored_encoder(conn, model, device=device)
        rows = conn.execute(
            queries.get("explain", "benchmark_pairs", table=identifiers.embedding_table(model)),
            {"model": model, "per_label": max(1, pairs), "pairs": pairs},
        ).fetchall()
        if not rows:
            raise NotFoundError(
                f"no benchmark pairs: no embedded test images with a train neighbour for {model}"
            )
        images = [
            (load_image_rgb(conn, r["query_id"]), load_image_rgb(conn, r["neighbour_id"])) for r in rows
        ]
    return encoder, [(r["query_id"], r["neighbour_id"]) for r in rows], images


def _measure(encoder, images, methods: Sequence[str], c: _Curves) -> list[MethodFaithfulness]:
    """Each method's deletion/insertion areas per pair against the random orders' mean, and its time per map."""
    from cbir_pg.explain import METHODS, deletion_insertion, embed_input, model_input, saliency_order

    rng = np.random.default_rng(c.seed)
    n_cells = c.grid * c.grid
    acc: dict[str, list[tuple[float, float, float, float]]] = {m: [] for m in methods}
    seconds: dict[str, list[float]] = {m: [] for m in methods}
    for q_rgb, n_rgb in images:  # the query's map against the unmasked neighbour
        xq = model_input(encoder, q_rgb)
        target = embed_input(encoder, model_input(encoder, n_rgb))
        curve = partial(deletion_insertion, encoder, xq, target, grid=c.grid, steps=c.steps)
        rand = [curve(rng.permutation(n_cells)) for _ in range(c.random_orders)]
        r_del = float(np.mean([x.deletion_auc for x in rand]))
        r_ins = float(np.mean([x.insertion_auc for x in rand]))
        for m in methods:
            t0 = time.perf_counter()
            query_map = METHODS.get(m)(encoder, xq, target, c.params)
            seconds[m].append(time.perf_counter() - t0)
            x = curve(saliency_order(query_map, c.grid))
            acc[m].append((x.deletion_auc, x.insertion_auc, r_del, r_ins))
    return [_faithfulness(m, acc[m], seconds[m]) for m in methods]


def _faithfulness(method: str, per_pair: list, seconds: list[float]) -> MethodFaithfulness:
    a = np.asarray(per_pair, np.float64)
    return MethodFaithfulness(
        method=method,
        n_pairs=len(a),
        deletion_auc=float(a[:, 0].mean()),
        insertion_auc=float(a[:, 1].mean()),
        random_deletion_auc=float(a[:, 2].mean()),
        random_insertion_auc=float(a[:, 3].mean()),
        seconds_per_map=float(np.median(seconds)),
        per_pair=[tuple(x) for x in per_pair],
    )


def _store(db: Database, out: FaithfulnessResult, config_hash: str, c: _Curves) -> None:
    """One ``cbir.explain_faithfulness`` row per method; their ids go to ``out.row_ids``."""
    from cbir_pg.eval.runs import code_version

    with db.connection() as conn:
        for r in out.methods:
            params = {
                **c.params.keyed(r.method),
                "curve_grid": c.grid,
                "curve_steps": c.steps,
                "random_orders": c.random_orders,
                "seed": c.seed,
                "pairs": out.pairs,
            }
            row = conn.execute(
                queries.get("explain", "insert_faithfulness"),
                {
                    "model": out.model,
                    "config_hash": config_hash,
                    "method": r.method,
                    "params": Jsonb(params),
                    "n_pairs": r.n_pairs,
                    "grid": c.grid,
                    "deletion_auc": r.deletion_auc,
                    "insertion_auc": r.insertion_auc,
                    "random_deletion_auc": r.random_deletion_auc,
                    "random_insertion_auc": r.random_insertion_auc,
                    "seconds_per_map": r.seconds_per_map,
                    "device": out.device,
                    "code_version": code_version(),
                },
            ).fetchone()
            out.row_ids.append(int(row["id"]))


def evaluate_explanations(
    db: Database,
    model: str,
    *,
    methods: Sequence[str] = ("occlusion", "rise", "gradients"),
    pairs: int = 12,
    grid: int = 7,
    steps: int = 12,
    random_orders: int = 2,
    seed: int = 0,
    device: str = "cpu",
    store: bool = True,
) -> FaithfulnessResult:
    """Measure deletion/insertion areas of each method on ``pairs`` benchmark pairs and store them."""
    from cbir_pg.explain import METHODS, ExplainParams

    identifiers.check_key(model)
    for m in methods:
        METHODS.get(m)
    if not 1 <= pairs <= 10000:
        raise ConfigError(f"pairs must be between 1 and 10000, got {pairs}")
    if not 1 <= random_orders <= 100:
        raise ConfigError(f"random_orders must be between 1 and 100, got {random_orders}")
    curves = _Curves(grid, steps, random_orders, seed, ExplainParams(grid=grid))
    encoder, pair_ids, images = _benchmark_pairs(db, model, pairs, device)
    results = _measure(encoder, images, methods, curves)
    out = FaithfulnessResult(model, grid, steps, str(encoder.device), results, pair_ids)
    if store:
        _store(db, out, encoder.config.config_hash(), curves)
    return out
