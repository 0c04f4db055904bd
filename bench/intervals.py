"""Paired differences with 95% intervals for docs/evaluation.md's comparative claims:
``python -m bench.intervals [both|breast]``.

The test-split rankings of the fusion tables (queries = test, index = train, exact search; the
configurations bench/fusion.py chose on val), each paired with both single models by
:func:`cbir_pg.eval.compare.compare_runs`. Runs on the database of ``CBIR_PG_HOME`` (or ``CBIR_PG_DSN``)
with the demo benchmark imported and efficientnet_lite0 and efficientnet_lite2 embedded
(``cbir-pg demo --fuse-with efficientnet_lite2``). ``both``: BreastMNIST + PneumoniaMNIST; ``breast``:
BreastMNIST only. Writes ``bench/results/<stamp>-intervals-<scope>.json``.
"""

import json
import sys
import time

from bench.fusion import chosen_rankings
from bench.fusion_prepare import MODELS as M
from cbir_pg.db.database import Database
from cbir_pg.eval.compare import compare_runs
from cbir_pg.eval.fusion import evaluate_ranking
from cbir_pg.eval.retrieval import evaluate_retrieval

DS = ["breastmnist", "pneumoniamnist"]
NS = (1, 3, 5, 10)
# bench/fusion.py's choices on val for each scope (``chosen`` of bench/results/20261201T040944Z-fusion.json
# and, BreastMNIST only, 20261201T000930Z-fusion.json), and the names of the six rankings they make
CHOSEN = {
    "both": (
        ("rrf", "mean", "lite2+aqe(1,1)", "lite2+krr(10,0.6)", "lite2+aqe+krr", "mean+aqe(1,3)"),
        dict(rrf_c=60.0, fusion="mean", aqe=(1, 1.0), krr=(10, 0.6), fused_aqe=(1, 3.0)),
    ),
    "breast": (
        ("rrf20", "mean", "lite2+aqe(3,3)", "lite2+krr(20,0.3)", "lite2+aqe+krr", "rrf20+aqe(3,3)"),
        dict(rrf_c=20.0, fusion="rrf", aqe=(3, 3.0), krr=(20, 0.3), fused_aqe=(3, 3.0)),
    ),
}


def _runs(db: Database, scope: str) -> dict[str, str]:
    """Each single model's test run and each chosen ranking's, by name."""
    ds = DS if scope == "both" else ["breastmnist"]
    runs = {}
    for m in M:
        runs[m] = evaluate_retrieval(
            db, m, ns=NS, query_splits=("test",), datasets=ds, mode="exact", progress=False
        ).primary.run_id
    names, chosen = CHOSEN["both" if scope == "both" else "breast"]
    cfg = dict(zip(names, chosen_rankings(M[1], **chosen), strict=True))
    for k, r in cfg.items():
        runs[k] = evaluate_ranking(db, r, ns=NS, query_splits=("test",), datasets=ds, mode="exact").run_id
        print(k, runs[k], flush=True)
    return runs


def _compare(db: Database, runs: dict[str, str]) -> dict[str, list[dict]]:
    """Every run paired with both single models (P@1 and P@10 printed as they come)."""
    out = {}
    for k in runs:
        for base in M:
            if k == base:
                continue
            c = compare_runs(db, runs[k], runs[base], ns=NS)
            out[f"{k} - {base}"] = [
                dict(n=d.n, avg=d.average, a=d.a, b=d.b, diff=d.diff, low=d.low, high=d.high, p=d.p_value)
                for d in c.differences
            ]
            p1 = [d for d in c.differences if d.n == 1]
            print(
                f"{k} - {base}: " + "; ".join(f"{d.average} P@1 {d.phrase()} p={d.p_value:.3f}" for d in p1),
                flush=True,
            )
            p10 = [d for d in c.differences if d.n == 10]
            print(
                "    P@10: " + "; ".join(f"{d.average} {d.phrase()} p={d.p_value:.3f}" for d in p10),
                flush=True,
            )
    return out


def main() -> None:
    scope = sys.argv[1] if len(sys.argv) > 1 else "both"
    db = Database()
    runs = _runs(db, scope)
    out = {"runs": runs, "cmp": _compare(db, runs)}
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    with open(f"bench/results/{stamp}-intervals-{scope}.json", "w") as fh:
        json.dump(out, fh, indent=1)


if __name__ == "__main__":
    main()
