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
    from cbir_pg.eval.runs import code_version
    from cbir_pg.explain import (
        METHODS,
        ExplainParams,
        deletion_insertion,
        embed_input,
        model_input,
        saliency_order,
    )
    from cbir_pg.search import load_image_rgb, stored_encoder

    identifiers.check_key(model)
    for m in methods:
        METHODS.get(m)
    if not 1 <= pairs <= 10000:
        raise ConfigError(f"pairs must be between 1 and 10000, got {pairs}")
    if not 1 <= random_orders <= 100:
        raise ConfigError(f"random_orders must be between 1 and 100, got {random_orders}")
    params = ExplainParams(grid=grid)
    with db.connection() as conn:
        encoder = stored_encoder(conn, model, device=device)
        per_label = max(1, pairs)
        rows = conn.execute(
            queries.get("explain", "benchmark_pairs", table=identifiers.embedding_table(model)),
            {"model": model, "per_label": per_label, "pairs": pairs},
        ).fetchall()
        if not rows:
            raise NotFoundError(
                f"no benchmark pairs: no embedded test images with a train neighbour for {model}"
            )
        images = [
            (load_image_rgb(conn, r["query_id"]), load_image_rgb(conn, r["neighbour_id"])) for r in rows
        ]
    rng = np.random.default_rng(seed)
    n_cells = grid * grid
    acc: dict[str, list[tuple[float, float, float, float]]] = {m: [] for m in methods}
    seconds: dict[str, list[float]] = {m: [] for m in methods}
    for q_rgb, n_rgb in images:  # the query's map against the unmasked neighbour
        xq = model_input(encoder, q_rgb)
        target = embed_input(encoder, model_input(encoder, n_rgb))
        rand = [
            deletion_insertion(encoder, xq, target, rng.permutation(n_cells), grid=grid, steps=steps)
            for _ in range(random_orders)
        ]
        r_del = float(np.mean([c.deletion_auc for c in rand]))
        r_ins = float(np.mean([c.insertion_auc for c in rand]))
        for m in methods:
            t0 = time.perf_counter()
            query_map = METHODS.get(m)(encoder, xq, target, params)
            seconds[m].append(time.perf_counter() - t0)
            c = deletion_insertion(
                encoder, xq, target, saliency_order(query_map, grid), grid=grid, steps=steps
            )
            acc[m].append((c.deletion_auc, c.insertion_auc, r_del, r_ins))
    results = []
    for m in methods:
        a = np.asarray(acc[m], np.float64)
        results.append(
            MethodFaithfulness(
                method=m,
                n_pairs=len(a),
                deletion_auc=float(a[:, 0].mean()),
                insertion_auc=float(a[:, 1].mean()),
                random_deletion_auc=float(a[:, 2].mean()),
                random_insertion_auc=float(a[:, 3].mean()),
                seconds_per_map=float(np.median(seconds[m])),
                per_pair=[tuple(x) for x in acc[m]],
            )
        )
    out = FaithfulnessResult(
        model, grid, steps, str(encoder.device), results, [(r["query_id"], r["neighbour_id"]) for r in rows]
    )
    if store:
        with db.connection() as conn:
            for r in results:
                out.row_ids.append(
                    int(
                        conn.execute(
                            queries.get("explain", "insert_faithfulness"),
                            {
                                "model": model,
                                "config_hash": encoder.config.config_hash(),
                                "method": r.method,
                                "params": Jsonb(
                                    {
                                        **params.keyed(r.method),
                                        "curve_grid": grid,
                                        "curve_steps": steps,
                                        "random_orders": random_orders,
                                        "seed": seed,
                                        "pairs": out.pairs,
                                    }
                                ),
                                "n_pairs": r.n_pairs,
                                "grid": grid,
                                "deletion_auc": r.deletion_auc,
                                "insertion_auc": r.insertion_auc,
                                "random_deletion_auc": r.random_deletion_auc,
                                "random_insertion_auc": r.random_insertion_auc,
                                "seconds_per_map": r.seconds_per_map,
                                "device": out.device,
                                "code_version": code_version(),
                            },
                        ).fetchone()["id"]
                    )
                )
    return out
