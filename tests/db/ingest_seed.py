"""Seed real MedMNIST images for the ingest tests: write the .npz images as PNG files and insert
cbir.dataset / cbir.label / cbir.image rows. (Stand-in until the dataset importer is used here.)"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import psycopg
from PIL import Image

FLAGS = {
    "breastmnist": ("breastmnist.npz", "US", "breast", {0: "malignant", 1: "normal_or_benign"}),
    "pneumoniamnist": ("pneumoniamnist_subset.npz", "XR", "chest", {0: "normal", 1: "pneumonia"}),
}


def seed_medmnist(
    dsn: str, data_dir: Path, root: Path, flags=("breastmnist",), per_split: int | None = None
) -> int:
    """Insert the images of ``flags`` (optionally the first ``per_split`` of each split); returns the count."""
    n = 0
    with psycopg.connect(dsn) as conn:
        for flag in flags:
            fname, modality, region, names = FLAGS[flag]
            from cbir_pg.datasets import medmnist_files_in as files_in

            data = np.load(files_in(data_dir).get(flag, data_dir / fname))
            droot = root / flag
            droot.mkdir(parents=True, exist_ok=True)
            ds_id = conn.execute(
                "insert into cbir.dataset (key, kind, name, root) values (%s, 'medmnist', %s, %s) returning id",
                (flag, flag, str(droot)),
            ).fetchone()[0]
            label_ids = {}
            for v, finding in names.items():
                key = f"{modality}/{region}/{finding}"
                kind = "anatomical" if finding in ("normal", "normal_or_benign") else "pathological"
                label_ids[v] = conn.execute(
                    "insert into cbir.label (key, modality, region, finding, kind) values (%s, %s, %s, %s, %s)"
                    " on conflict (key) do update set key = excluded.key returning id",
                    (key, modality, region, finding, kind),
                ).fetchone()[0]
            rows = []
            for split in ("train", "val", "test"):
                imgs, labels = data[f"{split}_images"], data[f"{split}_labels"].reshape(-1)
                count = len(imgs) if per_split is None else min(per_split, len(imgs))
                for i in range(count):
                    uri = f"{split}/{i:05d}.png"
                    p = droot / uri
                    p.parent.mkdir(exist_ok=True)
                    Image.fromarray(imgs[i]).save(p)
                    rows.append((ds_id, uri, split, label_ids[int(labels[i])]))
            with conn.cursor() as cur:
                cur.executemany(
                    "insert into cbir.image (dataset_id, uri, split, label_id) values (%s, %s, %s, %s)", rows
                )
            n += len(rows)
    return n
