"""P1, ingest efficiency: end-to-end ingest images/s divided by the bare forward-pass images/s of the
same encoder, at the same batch size, device and precision, on real images (MedMNIST).

Each measurement runs in its own process (``python -m bench.p1_ingest child ...``), so the peak RSS is
that of an ingest process alone:

1. the encoder is built once (``create_encoder``, random weights for the ViT-B/16-sized encoder);
2. **bare forward**: preprocessed tensors of real images, already on the device, through the model
   alone (``torch.inference_mode``, the same autocast as ingest), ``torch.cuda.synchronize`` around the
   timing on CUDA;
3. **end-to-end**: the ingest loop (:mod:`cbir_pg.ingest.worker`) with the *same* encoder object over freshly
   imported images: claim → decode in DataLoader workers → forward → L2-normalise → binary COPY →
   commit, wall-clock from the first claim to the commit of the last batch. Model construction is
   excluded from both sides (it is reported separately).

Peak RSS: the ingest process (``ru_maxrss``) and, sampled every 50 ms, the process plus its DataLoader
workers together.

Target: ratio >= 0.90.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cbir_pg.db.database import Database

TARGET = 0.90  # round 1's single target, kept for old results


def target_for(model: str, device: str) -> float:
    """Round 2 targets: CPU (efficientnet_lite0, fp32) >= 0.95; GPU (bf16, batch 256): ViT-B/16-sized
    >= 0.90, EfficientNet-Lite0 >= 0.50."""
    if not str(device).startswith("cuda"):
        return 0.95
    return 0.50 if "efficientnet" in model else 0.90


# --------------------------------------------------------------------------- child process
def _rss_sampler(stop: threading.Event, out: dict[str, float]) -> None:
    try:
        import psutil
    except ImportError:
        return
    me = psutil.Process()
    peak = 0
    while not stop.is_set():
        try:
            total = me.memory_info().rss + sum(c.memory_info().rss for c in me.children(recursive=True))
        except (psutil.Error, OSError):
            total = 0
        peak = max(peak, total)
        stop.wait(0.05)
    out["peak_rss_with_workers_mb"] = round(peak / 2**20, 1)


def _real_batches(data_dir: Path, encoder, batch_size: int, n_batches: int):
    """``n_batches`` distinct batches of preprocessed real MedMNIST images (greyscale → RGB)."""
    import numpy as np
    import torch

    arrays = []
    for name in ("pneumoniamnist_subset.npz", "breastmnist.npz"):
        with np.load(data_dir / name) as d:
            arrays.append(d["train_images"])
    imgs = np.concatenate(arrays)
    need = batch_size * n_batches
    idx = np.arange(need) % len(imgs)
    out = []
    for b in range(n_batches):
        tensors = [
            encoder.preprocess(np.repeat(imgs[i][..., None], 3, axis=2))
            for i in idx[b * batch_size : (b + 1) * batch_size]
        ]
        out.append(torch.stack([torch.as_tensor(t) for t in tensors]))
    return out


def _bare_forward(args: argparse.Namespace, encoder, sync) -> tuple[int, float]:
    """The model alone on preprocessed real batches already on the device: images done and seconds
    (repeated until ``--min-fwd-s`` or ``--max-fwd-reps``)."""
    import torch

    from cbir_pg.ingest import worker as iw

    dev = args.device
    batches = [
        b.to(dev) for b in _real_batches(Path(args.data_dir), encoder, args.batch_size, args.fwd_batches)
    ]
    with torch.inference_mode(), iw._autocast(dev, args.precision):
        for b in batches[: args.warmup]:
            encoder.module(b)
        sync()
        t0 = time.perf_counter()
        done = 0
        reps = 0
        while True:
            for b in batches:
                out = encoder.module(b)
                done += len(b)
            reps += 1
            sync()
            if time.perf_counter() - t0 >= args.min_fwd_s or reps >= args.max_fwd_reps:
                break
        t_fwd = time.perf_counter() - t0
    _ = out.float().cpu()
    return done, t_fwd


@dataclass
class _IngestRun:
    """One timed run of the product's ingest loop: its summary, the batches' (time, images) stamps, the
    start time, the seconds and the loader workers' sampled memory."""

    summary: Any
    stamps: list[tuple[float, int]]
    t0: float
    seconds: float
    rss: dict[str, float]


def _timed_ingest(args: argparse.Namespace, encoder, sync) -> _IngestRun:
    """End-to-end ingest (``ingest.worker._run_one``) with the same encoder object, memory sampled."""
    from cbir_pg.ingest import worker as iw
    from cbir_pg.ingest.claim import ClaimFilter

    flt = ClaimFilter(args.model, args.datasets.split(","), None, 3)
    summary = iw.IngestSummary(
        model=args.model, config_hash=encoder.config.config_hash(), device=args.device, processes=1
    )
    rss: dict[str, float] = {}
    stop = threading.Event()
    sampler = threading.Thread(target=_rss_sampler, args=(stop, rss), daemon=True)
    sampler.start()
    stamps: list[tuple[float, int]] = []
    t0 = time.perf_counter()
    iw._run_one(
        Database(args.dsn),
        encoder,
        flt,
        batch_size=args.batch_size,
        loader_workers=args.workers,
        precision=args.precision,
        limit=args.n,
        summary=summary,
        on_batch=lambda ok, bad: stamps.append((time.perf_counter(), ok + bad)),
    )
    sync()
    seconds = time.perf_counter() - t0
    stop.set()
    sampler.join()
    return _IngestRun(summary, stamps, t0, seconds, rss)


def _ingest_rates(run: _IngestRun, bare_ips: float) -> dict[str, object]:
    """The ingest run's rates against the bare forward pass; steady state runs from the first batch's
    commit to the last one's (loader start-up and the final empty pass excluded)."""
    summary, stamps, t0, t_e2e = run.summary, run.stamps, run.t0, run.seconds
    e2e_ips = summary.embedded / t_e2e if t_e2e else 0.0
    steady = None
    if len(stamps) >= 3:
        steady = sum(n for _, n in stamps[1:]) / (stamps[-1][0] - stamps[0][0])
    first_batch_s = stamps[0][0] - t0 if stamps else None
    return {
        "ingest_images": summary.embedded,
        "ingest_failed": summary.failed,
        "ingest_batches": summary.batches,
        "ingest_s": round(t_e2e, 3),
        "ingest_images_per_s": round(e2e_ips, 2),
        "ratio": round(e2e_ips / bare_ips, 3) if bare_ips else None,
        "first_batch_s": round(first_batch_s, 3) if first_batch_s is not None else None,
        "after_last_batch_s": round(t_e2e - (stamps[-1][0] - t0), 3) if stamps else None,
        "steady_images_per_s": round(steady, 2) if steady else None,
        "steady_ratio": round(steady / bare_ips, 3) if steady and bare_ips else None,
    }


def child(args: argparse.Namespace) -> dict[str, object]:
    """One P1 measurement in this process: the bare forward pass, then ingest with the same encoder."""
    import torch

    from cbir_pg.db.connect import connect
    from cbir_pg.encoders import create_encoder
    from cbir_pg.ingest import worker as iw

    if args.threads:
        torch.set_num_threads(args.threads)
    dev = args.device
    t0 = time.perf_counter()
    encoder = create_encoder(args.model, device=dev, pretrained=not args.random)
    t_build = time.perf_counter() - t0
    sync = torch.cuda.synchronize if dev.startswith("cuda") else (lambda: None)
    done, t_fwd = _bare_forward(args, encoder, sync)
    bare_ips = done / t_fwd
    with connect(args.dsn) as conn:
        iw.ensure_encoder_table(conn, encoder.config)
        conn.commit()
    parts = _stage_rates(args, encoder)
    run = _timed_ingest(args, encoder, sync)
    self_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    child_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {
        "model": args.model,
        "random_weights": bool(args.random),
        "device": dev,
        "precision": args.precision,
        "variant": args.variant,
        "batch_size": args.batch_size,
        "loader_workers": args.workers,
        "torch_threads": torch.get_num_threads(),
        "encoder_build_s": round(t_build, 2),
        "bare_images": done,
        "bare_s": round(t_fwd, 3),
        "bare_images_per_s": round(bare_ips, 2),
        **_ingest_rates(run, bare_ips),
        **parts,
        "peak_rss_mb": round(self_kb / 1024, 1),
        "peak_rss_loader_worker_mb": round(child_kb / 1024, 1),
        **run.rss,
    }


def _stage_rates(args: argparse.Namespace, encoder) -> dict[str, float]:
    """The other stages alone, one process: the loader worker's job (read + decode to uint8) images/s,
    and COPY + commit of one batch of vectors (then removed again)."""
    import numpy as np
    from psycopg import sql

    from cbir_pg.db import identifiers
    from cbir_pg.db.connect import connect
    from cbir_pg.ingest.claim import ClaimItem, image_path
    from cbir_pg.ingest.copy import copy_vectors
    from cbir_pg.ingest.pipeline import DecodeDataset

    with connect(args.dsn) as conn:
        rows = conn.execute(
            "select i.id, coalesce(d.root, ''), i.uri from cbir.image i join cbir.dataset d on d.id = i.dataset_id"
            " where not i.excluded and d.key = any(%s) order by i.id limit %s",
            (args.datasets.split(","), max(args.batch_size * 3, 192)),
        ).fetchall()
    ds = DecodeDataset(encoder.config)
    items = [ClaimItem(int(i), image_path(root, uri)) for i, root, uri in rows]
    for it in items[:8]:
        ds[it]
    t0 = time.perf_counter()
    for it in items:
        ds[it]
    decode_ips = len(items) / (time.perf_counter() - t0)
    rng = np.random.default_rng(0)
    ids = [it.image_id for it in items]
    times = []
    vtype = identifiers.vector_type_for(encoder.config.dim)
    with connect(args.dsn) as conn:
        for s in range(0, len(ids) - args.batch_size + 1, args.batch_size):
            v = rng.standard_normal((args.batch_size, encoder.config.dim)).astype(np.float32)
            t0 = time.perf_counter()
            copy_vectors(conn, args.model, ids[s : s + args.batch_size], v, vtype)
            conn.commit()
            times.append(time.perf_counter() - t0)
        conn.execute(sql.SQL("truncate {}").format(identifiers.embedding_table(args.model)))
        conn.commit()
    copy_s = float(np.median(times)) if times else float("nan")
    return {
        "decode_preprocess_images_per_s_1proc": round(decode_ips, 1),
        "copy_commit_s_per_batch": round(copy_s, 4),
        "copy_commit_images_per_s": round(args.batch_size / copy_s, 1) if times else None,
    }


# --------------------------------------------------------------------------- parent
def prepare_images(dsn: str, data_dir: Path, n_needed: int, log=print) -> tuple[int, list[str]]:
    """Import the MedMNIST benchmark (PNG files under ``CBIR_PG_HOME/images``) and, when more images are
    needed, register the same files again as extra datasets (``p1rep<k>``); returns the image count and
    the dataset keys."""
    from bench.common import connect
    from cbir_pg.datasets import import_medmnist_benchmark

    t0 = time.perf_counter()
    import_medmnist_benchmark(Database(dsn), data_dir, progress=False)
    with connect(dsn) as conn:
        keys = ["breastmnist", "pneumoniamnist"]
        count = "select count(*) from cbir.image i join cbir.dataset d on d.id = i.dataset_id where not i.excluded and d.key = any(%s)"
        base = conn.execute(count, (keys,)).fetchone()[0]
        total, k = base, 0
        while total < n_needed:
            k += 1
            for src in ("breastmnist", "pneumoniamnist"):
                if conn.execute("select 1 from cbir.dataset where key = %s", (f"p1rep{k}_{src}",)).fetchone():
                    keys.append(f"p1rep{k}_{src}")  # registered by an earlier part of this run
                    continue
                ds = conn.execute(
                    "insert into cbir.dataset (key, kind, name, root) select %s, kind, name, root from cbir.dataset"
                    " where key = %s returning id",
                    (f"p1rep{k}_{src}", src),
                ).fetchone()[0]
                keys.append(f"p1rep{k}_{src}")
                conn.execute(
                    "insert into cbir.image (dataset_id, uri, split, label_id, width, height, modality)"
                    " select %s, i.uri, i.split, i.label_id, i.width, i.height, i.modality from cbir.image i"
                    " join cbir.dataset d on d.id = i.dataset_id where d.key = %s and not i.excluded",
                    (ds, src),
                )
            total = conn.execute(count, (keys,)).fetchone()[0]
        conn.commit()
    log(f"  P1 images: {base} imported ({time.perf_counter() - t0:.1f}s), {total} registered")
    return total, keys


def _truncate(dsn: str, model: str) -> None:
    from bench.common import connect
    from cbir_pg.db import identifiers

    with connect(dsn) as conn:
        exists = conn.execute(
            "select to_regclass(%s)", (f"cbir.{identifiers.embedding_table_name(model)}",)
        ).fetchone()[0]
        if exists:
            from psycopg import sql

            conn.execute(sql.SQL("truncate {}").format(identifiers.embedding_table(model)))
        conn.execute("delete from cbir.ingest_failure where encoder_key = %s", (model,))
        conn.commit()


def run_case(
    dsn: str,
    data_dir: Path,
    *,
    datasets: list[str],
    model: str,
    random: bool,
    n: int,
    batch_size: int,
    device: str,
    workers: int,
    precision: str,
    threads: int = 0,
    variant: str = "product",
    min_fwd_s: float = 5.0,
    log=print,
    env: dict | None = None,
) -> dict[str, object]:
    _truncate(dsn, model)
    options = {
        "dsn": dsn,
        "data-dir": data_dir,
        "datasets": ",".join(datasets),
        "model": model,
        "n": n,
        "batch-size": batch_size,
        "device": device,
        "workers": workers,
        "precision": precision,
        "threads": threads,
        "variant": variant,
        "min-fwd-s": min_fwd_s,
    }
    cmd = [sys.executable, "-m", "bench.p1_ingest", "child"]
    for name, value in options.items():
        cmd += [f"--{name}", str(value)]
    if random:
        cmd.append("--random")
    out = subprocess.run(
        cmd, capture_output=True, text=True, env=env, cwd=Path(__file__).resolve().parent.parent
    )
    if out.returncode != 0:
        raise RuntimeError(f"P1 child failed ({model}): {out.stderr.strip()[-2000:]}")
    res = json.loads(out.stdout.strip().splitlines()[-1])
    log(
        f"  P1 {model} [{variant}] bs={batch_size} w={workers} {device}/{precision}: bare {res['bare_images_per_s']:.1f} img/s,"
        f" ingest {res['ingest_images_per_s']:.1f} img/s -> ratio {res['ratio']}, peak RSS {res['peak_rss_mb']} MB"
        f" (+workers {res.get('peak_rss_with_workers_mb')} MB)"
    )
    return res


def run_p1_cases(ctx, *, effnet: str, vit: str) -> dict[str, object]:
    """P1 for the two models of this mode (or ``--models``), each variant of ``--variants``, in child
    processes (:func:`run_case`); the part's result with its per-case target."""
    args, cfg, log, bs = ctx.args, ctx.size("p1"), ctx.log, ctx.bs
    data = ctx.data_dir()
    if data is None:
        log("  P1 skipped: MedMNIST files not found (set CBIR_PG_DATA_DIR or --data-dir)")
        return {"skipped": "MedMNIST files not found"}
    env = dict(os.environ)
    env["CBIR_PG_HOME"] = str(bs.root / "home")
    os.environ["CBIR_PG_HOME"] = env["CBIR_PG_HOME"]
    n_max = max(cfg["effnet_n"], cfg["vit_n"])
    available, datasets = prepare_images(bs.dsn, data, n_max, log=log)
    cases = []
    for model, random, n, bs_, variant in _p1_plan(args, cfg, effnet, vit):
        try:
            cases.append(
                run_case(
                    bs.dsn,
                    data,
                    datasets=datasets,
                    model=model,
                    random=random,
                    n=min(n, available),
                    batch_size=bs_,
                    device=args.device,
                    workers=args.workers if args.workers is not None else cfg["workers"],
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
    return {"data_dir": str(data), "images_available": available, **_p1_verdict(cases, args.device)}


def _p1_plan(args, cfg: dict, effnet: str, vit: str) -> list[tuple[str, bool, int, int, str]]:
    """(model, random weights, images, batch size, variant) of each P1 case: the mode's two models (or
    ``--models``), each with every variant of ``--variants``; only efficientnet_lite0 has real weights."""
    effnet, vit = cfg.get("models", (effnet, vit))
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    models = (
        (effnet, effnet != "efficientnet_lite0" or args.random_weights, cfg["effnet_n"], cfg["effnet_bs"]),
        (vit, True, cfg["vit_n"], cfg["vit_bs"]),
    )
    return [
        (m, r, n_, args.batch_size or b_, v)
        for m, r, n_, b_ in models
        if not args.models or m in args.models.split(",")
        for v in variants
    ]


def _p1_verdict(cases: list[dict], device: str) -> dict[str, object]:
    """The cases with the per-case target: every product case ran and meets its model's ratio."""
    products = [c for c in cases if c.get("variant", "product") == "product"]
    ok = [c for c in products if c.get("ratio") is not None]
    return {
        "cases": cases,
        "target": "per case: " + ", ".join(f"{c['model']} >= {target_for(c['model'], device)}" for c in ok),
        "ratio": min(c["ratio"] for c in ok) if ok else None,
        "passed": bool(products)
        and len(ok) == len(products)
        and all(c["ratio"] >= target_for(c["model"], device) for c in ok),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.p1_ingest")
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("child", help="one measurement (used by bench.run)")
    c.add_argument("--dsn", required=True)
    c.add_argument("--data-dir", required=True)
    c.add_argument("--datasets", required=True, help="comma-separated dataset keys to ingest")
    c.add_argument("--model", required=True)
    c.add_argument("--random", action="store_true")
    c.add_argument("--n", type=int, required=True)
    c.add_argument("--batch-size", type=int, default=64)
    c.add_argument("--device", default="cpu")
    c.add_argument("--workers", type=int, default=2)
    c.add_argument("--precision", default="fp32")
    c.add_argument("--threads", type=int, default=0)
    c.add_argument(
        "--variant",
        default="product",
        choices=["product"],
        help="product: the ingest code as it is (round 1's prototypes are now the product)",
    )
    c.add_argument("--fwd-batches", type=int, default=4)
    c.add_argument("--warmup", type=int, default=1)
    c.add_argument("--min-fwd-s", type=float, default=5.0)
    c.add_argument("--max-fwd-reps", type=int, default=50)
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    res = child(args)
    sys.stdout.write(json.dumps(res) + "\n")


if __name__ == "__main__":
    main()
