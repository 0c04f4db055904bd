"""``python -m bench.run [--full] [--device cpu|cuda] [--precision fp32|bf16] [--only p1,p2,p3,build] [--scale]``

Runs the benchmarks of issue 9 on a throw-away embedded PostgreSQL, writes
``bench/results/<timestamp>.json`` and regenerates ``docs/benchmarks.md``. The quick run (``make bench``)
is sized to finish in under 10 minutes on 2 idle cores; ``--full`` uses the issue's sizes. ``--scale``
(``make bench-scale``) runs only the index-size series of issue 19 (``bench/scale.py``) and also renders
``docs/img/scale.png`` and the measured block of ``docs/scaling.md``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

#: the storage comparison's sweep at the quick and full sizes (only the number of vectors differs)
STORAGE_SWEEP = {"dim": 768, "queries": 500, "ms": [16, 32], "ef": [10, 20, 40, 80, 160, 320]}

#: sizes per mode; the JSON records them, so the doc says which mode produced the numbers
SIZES = {
    "quick": {
        "ceiling": {
            "cpu": {"n_small": 4096, "n_large": 192, "batch": 256, "workers": 2},
            "cuda": {"n_small": 16384, "n_large": 1024, "batch": 256, "workers": 12},
        },
        "storage": {"n": 30_000, **STORAGE_SWEEP},
        "build_p2": {"n": 30_000, "dims": [512, 768], "queries": 500, "ef": [20, 40, 64, 100]},
        "p3": {"sizes": [20_000, 50_000], "queries": 1000, "dim": 512, "ef": [40, 80]},
        "p1": {
            "cpu": {"effnet_n": 1024, "effnet_bs": 64, "vit_n": 128, "vit_bs": 16, "workers": 1},
            "cuda": {"effnet_n": 4096, "effnet_bs": 256, "vit_n": 4096, "vit_bs": 256, "workers": 8},
        },
        "page": {"model": "efficientnet_lite0", "images": 512, "queries": 200, "uploads": 30, "k": 10},
        "coldstart": {"runs": 3},
        "demo": {"model": "tiny_cnn"},
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
        "page": {"model": "tiny_cnn", "images": 128, "queries": 30, "uploads": 5, "k": 10},
        "coldstart": {"runs": 1},
        "demo": {"model": "tiny_cnn"},
    },
    "full": {
        "ceiling": {
            "cpu": {"n_small": 10_000, "n_large": 384, "batch": 256, "workers": 2},
            "cuda": {"n_small": 32768, "n_large": 2048, "batch": 256, "workers": 14},
        },
        "storage": {"n": 100_000, **STORAGE_SWEEP},
        "build_p2": {"n": 100_000, "dims": [512, 768], "queries": 1000, "ef": [20, 40, 64, 100, 160]},
        "p3": {"sizes": [50_000, 100_000, 200_000], "queries": 2000, "dim": 512, "ef": [40, 80, 160, 320]},
        "p1": {
            "cpu": {"effnet_n": 10_000, "effnet_bs": 64, "vit_n": 1024, "vit_bs": 32, "workers": 1},
            "cuda": {"effnet_n": 10_000, "effnet_bs": 256, "vit_n": 10_000, "vit_bs": 256, "workers": 12},
        },
        "page": {"model": "efficientnet_lite0", "images": 2048, "queries": 500, "uploads": 100, "k": 10},
        "coldstart": {"runs": 5},
        "demo": {"model": "efficientnet_lite0"},
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
#: parts whose latest stored result the page shows whichever run it is rendered from
ROUND3_PARTS = ("cohort", "page", "coldstart", "demo", "suite")
SCALE_PLOT = REPO / "docs" / "img" / "scale.png"
SCALE_DOC = REPO / "docs" / "scaling.md"


def _parser():
    import argparse

    from bench.parts import PARTS

    names = ",".join(p.name for p in PARTS if p.default)
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    add = p.add_argument
    add("--full", action="store_true", help="the issue's sizes (100k vectors, 50k/100k/200k, 10k images)")
    add(
        "--smoke",
        action="store_true",
        help="tiny sizes and tiny encoders: checks the paths, measures nothing",
    )
    add("--device", default="cpu", choices=["cpu", "cuda"], help="device for P1 (encoders)")
    add("--precision", default="fp32", choices=["fp32", "bf16", "fp16"], help="P1 autocast precision")
    add("--out", default=str(REPO / "bench" / "results"), help="folder for the JSON result")
    add(
        "--only",
        default=names,
        help="comma-separated subset of the parts: "
        + "; ".join(f"{x.name}: {x.what}" for x in PARTS if x.default),
    )
    add("--data-dir", default=None, help="folder with breastmnist.npz and pneumoniamnist_subset.npz")
    add("--doc", default=str(REPO / "docs" / "benchmarks.md"), help="Markdown page to regenerate")
    add("--no-doc", action="store_true", help="do not regenerate the Markdown page")
    add("--workers", type=int, default=None, help="P1: DataLoader workers (default: per mode and device)")
    add("--batch-size", type=int, default=None, help="P1: batch size for both models")
    add(
        "--variants",
        default="product",
        help="P1: comma-separated: product (the ingest code), "
        "device_normalise (prototype: uint8 from the workers, normalised on the device)",
    )
    add("--models", default=None, help="P1: comma-separated subset of the two models (default: both)")
    add(
        "--random-weights",
        action="store_true",
        help="P1: random weights for every model (same speed; for machines without the weight packages)",
    )
    add(
        "--scale",
        action="store_true",
        help="only the index-size series (issue 19): build, latency, SQL-HNSW eval vs exact FAISS per size; "
        "also renders docs/img/scale.png and docs/scaling.md's measured block",
    )
    add(
        "--sizes",
        default=None,
        help="--scale: comma-separated index sizes (default 20000,50000,100000,200000)",
    )
    add(
        "--render",
        metavar="JSON",
        default=None,
        help="only regenerate the Markdown page from a stored result",
    )
    return p


def _selection(p, args) -> tuple[list[str], str, dict]:
    """The parts to run, the mode's name and its sizes, from the options (``p.error`` on bad ones)."""
    from bench.parts import by_name

    only = [s.strip() for s in args.only.split(",") if s.strip()]
    bad = [s for s in only if s not in by_name()]
    if bad:
        p.error(f"unknown part(s) {bad}; use {','.join(by_name())}")
    mode = "full" if args.full else ("smoke" if args.smoke else "quick")
    if not args.scale:
        if args.sizes:
            p.error("--sizes needs --scale")
        return only, mode, SIZES[mode]
    cfg = dict(SCALE_SIZES["smoke" if args.smoke else "scale"])
    if args.sizes:
        try:
            cfg["sizes"] = [int(x.replace("_", "")) for x in args.sizes.split(",") if x.strip()]
        except ValueError:
            p.error(f"--sizes: comma-separated integers, got {args.sizes!r}")
        if not cfg["sizes"] or min(cfg["sizes"]) < 100:
            p.error("--sizes: at least one size, each >= 100")
    return ["scale"], ("smoke-scale" if args.smoke else "scale"), {"scale": cfg}


def _meta(p, args, argv, only: list[str], mode: str, sz: dict, stamp: datetime) -> dict[str, object]:
    from bench.common import machine_info

    meta: dict[str, object] = {
        "date": stamp.isoformat(timespec="seconds"),
        "mode": mode,
        "device": args.device,
        "precision": args.precision,
        "parts": only,
        "sizes": {k: (v if k not in ("p1", "ceiling") else v[args.device]) for k, v in sz.items()},
        "machine": machine_info(),
        "argv": sys.argv[1:] if argv is None else argv,
    }
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            p.error("--device cuda: torch sees no CUDA device")
        meta["machine"]["gpu"] = torch.cuda.get_device_name(0)  # type: ignore[index]
        meta["torch"] = torch.__version__
    return meta


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _page_text(path: Path, res: dict) -> str:
    """docs/benchmarks.md's text from the result stored at ``path`` (its summary rows recomputed), with
    the latest other results it shows beside it."""
    from bench.report import render, summary_rows

    res["summary"] = summary_rows(res)
    return render(
        res,
        json_path=path,
        repo=REPO,
        extras=_other_device_p1(path.parent, res["meta"]["device"]),
        p3_extras=_full_p3(path.parent, res["meta"]["mode"]),
        round2_extras=_round2(path.parent, path),
    )


def _render_page(doc: Path, path: Path, res: dict) -> None:
    """docs/benchmarks.md from one stored result, with the latest other results it shows beside it."""
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(_page_text(path, res))
    _cohort_block(doc, path, res)
    _log(f"bench: wrote {doc}")


def _cohort_block(doc: Path, path: Path, res: dict) -> None:
    """The search-and-fusion block of ``bench/cohort.py`` from this result or the latest stored one."""
    from bench.cohort import doc_block, update_doc

    found = (path, res) if res.get("cohort") else None
    for f in sorted(path.parent.glob("*.json"), reverse=True):
        if found:
            break
        try:
            x = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        if x.get("cohort") and x.get("meta", {}).get("mode") != "smoke":
            found = (f, x)
    if found:
        update_doc(doc, doc_block(found[1]["cohort"], found[0].name))


def main(argv: list[str] | None = None) -> int:
    p = _parser()
    args = p.parse_args(argv)
    if args.render:
        path = Path(args.render).resolve()
        res = json.loads(path.read_text())
        if res.get("scale") and not args.no_doc:
            _render_scale(path, res, Path(args.doc))
        else:
            _render_page(Path(args.doc), path, res)
        return 0
    only, mode, sz = _selection(p, args)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from bench.common import BenchServer, load_avg
    from bench.parts import Context, run_parts

    started = time.perf_counter()
    stamp = datetime.now(timezone.utc)
    result: dict[str, object] = {"meta": _meta(p, args, argv, only, mode, sz, stamp)}
    with BenchServer.started() as bs:
        result["meta"]["server_settings"] = bs.settings  # type: ignore[index]
        _log(f"bench: {mode} run, server at {bs.root}, settings {bs.settings}")
        result.update(run_parts(Context(bs=bs, args=args, only=only, sizes=sz, log=_log)))
    result["meta"]["seconds"] = round(time.perf_counter() - started, 1)  # type: ignore[index]
    result["meta"]["load_avg_at_end"] = load_avg()  # type: ignore[index]
    from bench.report import summary_rows

    result["summary"] = summary_rows(result)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{stamp.strftime('%Y%m%dT%H%M%SZ')}-{mode}-{args.device}.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    _log(f"bench: wrote {path} ({result['meta']['seconds']}s)")  # type: ignore[index]
    if args.scale and args.smoke:
        from bench.scale import plot

        plot(result["scale"], path.with_suffix(".png"))  # type: ignore[arg-type]
    elif args.scale and not args.no_doc:
        _render_scale(path, result, Path(args.doc))
    elif not args.no_doc:
        _render_page(Path(args.doc), path, result)
    for row in result["summary"]:  # type: ignore[union-attr]
        print(f"{row['name']}: {row['value']} (target {row['target']}) {row['status']}")
    return 0


def _render_scale(path: Path, res: dict, doc: Path) -> None:
    """A scale result: the plot (docs/img/scale.png), the measured block of docs/scaling.md, and
    docs/benchmarks.md re-rendered from the result it was generated from (its "raw result" line), which
    then shows the latest scale result among the round 2 parts."""
    import re

    from bench.report import render_scale_block, replace_block
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
    doc.write_text(_page_text(base_path, json.loads(base_path.read_text())))
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
    seen.update(t for t in ROUND3_PARTS if cur.get(t))
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
        if x.get("meta", {}).get("mode") != "smoke":
            tags += [t for t in ROUND3_PARTS if x.get(t) and not isinstance(x[t].get("skipped"), str)]
        new = [t for t in tags if t not in seen]
        if new:
            seen.update(new)
            part = {
                "meta": x.get("meta") or {"date": f.name[:16], "mode": "?", "device": "cpu", "machine": {}}
            }
            if any(t.startswith("ceiling") for t in new):
                part["ceiling"] = x["ceiling"]
            if "storage" in new:
                part["storage"] = x["storage"]
            if "scale" in new:
                part["scale"] = x["scale"]
            part.update({t: x[t] for t in ROUND3_PARTS if t in new})
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


if __name__ == "__main__":
    raise SystemExit(main())
