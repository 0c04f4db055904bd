"""Fusion, alpha-QE and k-reciprocal re-ranking on the demo benchmark (BreastMNIST + PneumoniaMNIST,
efficientnet_lite0 and efficientnet_lite2 with their real offline weights): the table of
docs/evaluation.md, and the latency of fusion against one model (docs/benchmarks.md).

Protocol (never tuned on test):
1. every parameter is chosen on the validation split: queries = val, index = train, exact search;
   the criterion is the mean of micro and macro P@1 (ties: the smaller parameter set, listed first);
2. each chosen configuration, and each single model, is then evaluated once on test (queries = test,
   index = train, exact search); every run is stored in the database like any other.

    python -m bench.fusion [--home /tmp/cbir-fusion] [--latency-queries 200]

Writes bench/results/<stamp>-fusion.json and prints the Markdown tables.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from bench.fusion_prepare import MODELS, prepare
from cbir_pg.db.database import Database

if TYPE_CHECKING:
    from cbir_pg.eval.fusion import Ranking

NS = (1, 3, 5, 10)
GRID = {
    "rrf_c": (5.0, 20.0, 60.0),
    "aqe": ((1, 1.0), (1, 3.0), (2, 1.0), (2, 3.0), (3, 3.0), (5, 3.0)),
    "krr": ((5, 0.3), (10, 0.3), (20, 0.3), (10, 0.6)),
    "fused_aqe": ((1, 3.0), (2, 3.0), (3, 3.0)),
}


def _p(summary) -> dict[str, list[float]]:
    return {"micro": [float(x) for x in summary.micro], "macro": [float(x) for x in summary.macro]}


def _crit(row: dict) -> float:
    return (row["micro"][0] + row["macro"][0]) / 2


DATASETS: list[str] | None = None  # --dataset: restrict queries and index (one dataset, or all)


def evaluate(db: Database, what: str, ranking, split: str) -> dict:
    from cbir_pg.eval.fusion import evaluate_ranking
    from cbir_pg.eval.retrieval import evaluate_retrieval

    t0 = time.perf_counter()
    if ranking is None:
        r = evaluate_retrieval(
            db, what, ns=NS, query_splits=(split,), datasets=DATASETS, mode="exact", progress=False
        )
        out = {
            "name": what,
            "run_id": r.primary.run_id,
            **_p(r.primary.summary),
            "n_queries": r.primary.n_queries,
        }
    else:
        r = evaluate_ranking(db, ranking, ns=NS, query_splits=(split,), datasets=DATASETS, mode="exact")
        out = {"name": r.model, "run_id": r.run_id, **_p(r.summary), "n_queries": r.n_queries}
    out["seconds"] = round(time.perf_counter() - t0, 1)
    print(
        f"  {split:4s} {out['name']:70s} P@1 micro {out['micro'][0]:.4f} macro {out['macro'][0]:.4f}"
        f" ({out['seconds']} s)",
        flush=True,
    )
    return out


def chosen_rankings(
    best_model: str,
    *,
    rrf_c: float,
    fusion: str,
    aqe: tuple[int, float],
    krr: tuple[int, float],
    fused_aqe: tuple[int, float],
) -> list[Ranking]:
    """The six configurations evaluated once on test, from the settings chosen on val (``chosen`` of the
    result): RRF and mean fusion of both models; alpha-QE, k-reciprocal re-ranking and both on the best
    single model; the chosen fusion method with alpha-QE."""
    from cbir_pg.eval.fusion import Ranking

    return [
        Ranking(MODELS, fusion="rrf", c=rrf_c),
        Ranking(MODELS, fusion="mean"),
        Ranking((best_model,), expand=aqe),
        Ranking((best_model,), rerank=krr),
        Ranking((best_model,), expand=aqe, rerank=krr),
        Ranking(MODELS, fusion=fusion, c=rrf_c, expand=fused_aqe),
    ]


def tune_and_test(db: Database) -> dict:
    from cbir_pg.eval.fusion import Ranking

    val: dict[str, list[dict]] = {}
    print("validation (queries = val, index = train, exact)", flush=True)
    singles = {m: evaluate(db, m, None, "val") for m in MODELS}
    best_model = max(MODELS, key=lambda m: _crit(singles[m]))  # max keeps the first of equals
    val["single"] = list(singles.values())

    def pick(key: str, options, make):
        rows = [(opt, evaluate(db, "", make(opt), "val")) for opt in options]
        val[key] = [dict(r, option=list(o) if isinstance(o, tuple) else o) for o, r in rows]
        return max(rows, key=lambda t: _crit(t[1]))[0]

    c = pick("rrf", GRID["rrf_c"], lambda c: Ranking(MODELS, fusion="rrf", c=c))
    mean_row = evaluate(db, "", Ranking(MODELS, fusion="mean"), "val")
    val["mean"] = [mean_row]
    rrf_best = max(r["micro"][0] + r["macro"][0] for r in val["rrf"]) / 2
    fusion = "rrf" if rrf_best >= _crit(mean_row) else "mean"
    aqe = pick("aqe", GRID["aqe"], lambda o: Ranking((best_model,), expand=o))
    krr = pick("krr", GRID["krr"], lambda o: Ranking((best_model,), rerank=o))
    fused_aqe = pick("fused_aqe", GRID["fused_aqe"], lambda o: Ranking(MODELS, fusion=fusion, c=c, expand=o))
    chosen = {
        "best_single_on_val": best_model,
        "rrf_c": c,
        "fusion_method_for_combination": fusion,
        "aqe": list(aqe),
        "krr": list(krr),
        "fused_aqe": list(fused_aqe),
    }
    print(f"chosen on val: {chosen}", flush=True)

    print("test (queries = test, index = train, exact), once", flush=True)
    test = [evaluate(db, m, None, "test") for m in MODELS]
    configs = chosen_rankings(best_model, rrf_c=c, fusion=fusion, aqe=aqe, krr=krr, fused_aqe=fused_aqe)
    test += [evaluate(db, "", r, "test") for r in configs]
    return {"val": val, "chosen": chosen, "test": test}


def latency(db: Database, n_queries: int, k: int = 10, repeats: int = 3) -> dict:
    """Per-query latency (ms, warm, HNSW) of one model's similar_images and of the two-model fusion."""
    with db.connection() as conn:
        ids = [
            r["id"]
            for r in conn.execute(
                "select i.id from cbir.image i join cbir.embedding_efficientnet_lite0 a on a.image_id = i.id"
                " join cbir.embedding_efficientnet_lite2 b on b.image_id = i.id where i.split = 'test'"
                " order by md5(i.id::text) limit %s",
                (n_queries,),
            )
        ]
        stmts = {
            "similar_images efficientnet_lite0": (
                "select * from cbir.similar_images(%s, 'efficientnet_lite0', %s)",
                None,
            ),
            "similar_images efficientnet_lite2": (
                "select * from cbir.similar_images(%s, 'efficientnet_lite2', %s)",
                None,
            ),
            "similar_images_fused rrf (lite0 + lite2)": (
                "select * from cbir.similar_images_fused(%s, %s, %s)",
                list(MODELS),
            ),
            "similar_images_fused mean (lite0 + lite2)": (
                "select * from cbir.similar_images_fused(%s, %s, %s, p_method => 'mean')",
                list(MODELS),
            ),
        }
        for q in ids[:20]:  # warm the caches and the plans
            for s, m in stmts.values():
                conn.execute(s, (q, m, k) if m else (q, k)).fetchall()
        times: dict[str, list[float]] = {name: [] for name in stmts}
        for _ in range(repeats):  # interleaved, so load changes on a shared machine hit every statement alike
            for q in ids:
                for name, (s, m) in stmts.items():
                    t0 = time.perf_counter()
                    conn.execute(s, (q, m, k) if m else (q, k)).fetchall()
                    times[name].append((time.perf_counter() - t0) * 1000)
        out: dict[str, dict[str, float]] = {}
        for name, t in times.items():
            t.sort()
            out[name] = {
                "median_ms": statistics.median(t),
                "p95_ms": t[int(0.95 * (len(t) - 1))],
                "mean_ms": statistics.fmean(t),
            }
        conn.rollback()
    singles = [v["median_ms"] for n, v in out.items() if n.startswith("similar_images ")]
    base = statistics.fmean(singles)  # one model's similar_images: the mean of the two models' medians
    for name in out:
        out[name]["ratio_to_single_median"] = out[name]["median_ms"] / base
    return {"k": k, "queries": len(ids), "repeats": repeats, "results": out}


def vector_counts(db: Database) -> dict[str, int]:
    from psycopg import sql

    from cbir_pg.db import identifiers
    from cbir_pg.db.database import scalar

    with db.connection() as conn:
        return {
            m: scalar(conn, sql.SQL("select count(*) from {}").format(identifiers.embedding_table(m)))
            for m in MODELS
        }


def markdown(result: dict) -> str:
    lines = [
        "| ranking | micro P@1 | P@3 | P@5 | P@10 | macro P@1 | P@3 | P@5 | P@10 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["test"]:
        lines.append(
            f"| `{r['name']}` | "
            + " | ".join(f"{x:.4f}" for x in r["micro"])
            + " | "
            + " | ".join(f"{x:.4f}" for x in r["macro"])
            + " |"
        )
    return "\n".join(lines)


def main() -> None:
    from bench.common import machine_info

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--home", type=Path, default=Path("/tmp/cbir-fusion"))
    ap.add_argument(
        "--data-dir", type=Path, default=Path(os.environ.get("CBIR_PG_DATA_DIR", "../shared/datasets"))
    )
    ap.add_argument("--latency-queries", type=int, default=200)
    ap.add_argument("--skip-eval", action="store_true", help="only the latency benchmark")
    ap.add_argument("--skip-latency", action="store_true", help="only the evaluation")
    ap.add_argument(
        "--dataset", action="append", help="restrict to this dataset (default: the whole benchmark)"
    )
    ap.add_argument("--dsn", help="use this database as it is (no import, ingest or index build)")
    args = ap.parse_args()
    global DATASETS
    DATASETS = args.dataset
    db = Database(args.dsn or prepare(args.home, args.data_dir))
    result: dict = {
        "machine": machine_info(),
        "started": datetime.now(timezone.utc).isoformat(),
        "datasets": DATASETS,
        "vectors": vector_counts(db),
    }
    if not args.skip_eval:
        result.update(tune_and_test(db))
    if not args.skip_latency:
        result["latency"] = latency(db, args.latency_queries)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out = Path(__file__).parent / "results" / f"{stamp}-fusion.json"
    out.write_text(json.dumps(result, indent=1))
    if "test" in result:
        print(markdown(result))
    for name, r in result.get("latency", {}).get("results", {}).items():
        print(
            f"{name:45s} median {r['median_ms']:.2f} ms  p95 {r['p95_ms']:.2f} ms  x{r['ratio_to_single_median']:.2f}"
        )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
