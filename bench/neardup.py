"""Choose the near-duplicate threshold by measurement (issue 24): ``python -m bench.neardup``.

Every MedMNIST image of the demo benchmark (BreastMNIST + the PneumoniaMNIST subset, all splits) is
hashed as stored, and copies of it are hashed after each alteration a second copy of a scan suffers:

* ``resized``: bilinear upscale to 64 px and to 224 px (the same scan stored at another size),
* ``reencoded``: JPEG quality 75, decoded again,
* ``cropped``: a 1-pixel border removed (about 7 % of a 28 px side),
* ``all``: cropped, then resized to 224 px, then JPEG 75.

For each threshold t the measurement counts **pairs found** (an original and its own altered copy within
t bits) against **false positives** (pairs of two different originals within t bits; some may be true
duplicates inside MedMNIST, so this over-counts mistakes). Hashes are computed exactly as the importer
does (:func:`cbir_pg.images.perceptual_hash`), pairs by :func:`cbir_pg.datasets.neardup.hamming_pairs`.
A second part times ``hamming_pairs`` on 1 M hashes (random, with planted near pairs). Writes
``bench/results/<timestamp>-neardup.json`` and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import time
from pathlib import Path

import numpy as np


def _variants(gray: np.ndarray) -> dict[str, np.ndarray]:
    from PIL import Image

    im = Image.fromarray(gray)

    def jpeg(x: Image.Image) -> Image.Image:
        buf = io.BytesIO()
        x.convert("RGB").save(buf, format="JPEG", quality=75)
        return Image.open(io.BytesIO(buf.getvalue())).convert("L")

    w, h = im.size
    cropped = im.crop((1, 1, w - 1, h - 1))
    return {
        "resized_64": np.asarray(im.resize((64, 64), Image.Resampling.BILINEAR)),
        "resized_224": np.asarray(im.resize((224, 224), Image.Resampling.BILINEAR)),
        "reencoded": np.asarray(jpeg(im)),
        "cropped": np.asarray(cropped),
        "all": np.asarray(jpeg(cropped.resize((224, 224), Image.Resampling.BILINEAR))),
    }


def _hash(gray: np.ndarray) -> int:
    from cbir_pg.images import perceptual_hash

    return int(perceptual_hash(np.repeat(gray[:, :, None], 3, axis=2)), 16)


def measure(data_dir: Path, thresholds: range) -> dict:
    from cbir_pg.datasets.neardup import hamming_pairs, popcount64

    images = []
    for name in ("breastmnist.npz", "pneumoniamnist_subset.npz"):
        z = np.load(data_dir / name)
        for split in ("train", "val", "test"):
            images.extend(z[f"{split}_images"])
    originals = np.array([_hash(g) for g in images], dtype=np.uint64)
    kinds = list(_variants(images[0]))
    altered = {k: np.zeros(len(images), dtype=np.uint64) for k in kinds}
    for n, g in enumerate(images):
        for k, v in _variants(g).items():
            altered[k][n] = _hash(v)
    tmax = max(thresholds)
    i, j, d = hamming_pairs(originals, tmax)
    rows = []
    for t in thresholds:
        row = {"t": t, "false_positive_pairs": int((d <= t).sum())}
        involved = np.unique(np.r_[i[d <= t], j[d <= t]])
        row["images_in_false_pairs"] = int(len(involved))
        for k in kinds:
            own = popcount64(originals ^ altered[k])
            row[f"found_{k}"] = float((own <= t).mean())
        rows.append(row)
    own_all = {k: popcount64(originals ^ altered[k]) for k in kinds}
    return {
        "images": len(images),
        "identical_phash_groups": int(len(originals) - len(np.unique(originals))),
        "rows": rows,
        "own_distance_median": {k: float(np.median(v)) for k, v in own_all.items()},
        "own_distance_p90": {k: float(np.quantile(v, 0.9)) for k, v in own_all.items()},
    }


def time_million(n: int, t: int, seed: int = 0) -> dict:
    from cbir_pg.datasets.neardup import hamming_pairs

    rng = np.random.default_rng(seed)
    h = rng.integers(0, 2**64 - 1, size=n, dtype=np.uint64, endpoint=True)
    planted = 1000
    for k in range(planted):  # copies 0..t bits away
        x = h[k]
        for b in rng.choice(64, size=int(rng.integers(0, t + 1)), replace=False):
            x ^= np.uint64(1) << np.uint64(int(b))
        h[n - 1 - k] = x
    start, cpu = time.perf_counter(), time.process_time()
    i, j, _ = hamming_pairs(h, t)
    secs, cpu = time.perf_counter() - start, time.process_time() - cpu
    found = {(a, b) for a, b in zip(i.tolist(), j.tolist(), strict=True)}
    hit = sum((k, n - 1 - k) in found for k in range(planted))
    return {
        "n": n,
        "t": t,
        "seconds": round(secs, 2),
        "cpu_seconds": round(cpu, 2),
        "load_avg": os.getloadavg(),
        "pairs": int(len(i)),
        "planted_found": hit,
        "planted": planted,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--data-dir", type=Path, default=Path(os.environ.get("CBIR_PG_DATA_DIR", "../shared/datasets"))
    )
    ap.add_argument("--million", type=int, default=1_000_000, help="hashes for the timing (0: skip)")
    ap.add_argument("--t", type=int, default=4, help="threshold for the timing")
    args = ap.parse_args()
    res = {"measurement": measure(args.data_dir, range(0, 13)), "load_avg": os.getloadavg()}
    if args.million:
        res["timing"] = time_million(args.million, args.t)
    out = Path("bench/results") / (time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-neardup.json")
    out.write_text(json.dumps(res, indent=1))
    m = res["measurement"]
    kinds = [k[6:] for k in m["rows"][0] if k.startswith("found_")]
    print(f"{m['images']} images; wrote {out}")
    print("| t | " + " | ".join(f"found: {k}" for k in kinds) + " | false-positive pairs | images in them |")
    print("|---:|" + "---:|" * (len(kinds) + 2))
    for r in m["rows"]:
        cells = [f"{r['found_' + k]:.3f}" for k in kinds]
        print(
            f"| {r['t']} | "
            + " | ".join(cells)
            + f" | {r['false_positive_pairs']} | {r['images_in_false_pairs']} |"
        )
    if "timing" in res:
        print(res["timing"])


if __name__ == "__main__":
    main()
