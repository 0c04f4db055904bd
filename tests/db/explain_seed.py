"""A small real database for the similarity-map and judgement tests: real MedMNIST images (BreastMNIST
and PneumoniaMNIST, the first ``per_split`` of each split, through :func:`ingest_seed.seed_medmnist`)
embedded by the real ingest worker with the seeded tiny encoders and efficientnet_lite0 (real weights)."""

from __future__ import annotations

import os
import tempfile
import uuid
from pathlib import Path

MODELS = ("tiny_cnn", "tiny_vit", "tiny_clip", "efficientnet_lite0")


def build_seeded_template(pg_server_dsn: str, template_db: str, data_dir: Path, per_split: int = 6) -> str:
    """Name of a new database (a clone of the migrated template) holding the images and their vectors."""
    from conftest import create_database
    from ingest_seed import seed_medmnist

    from cbir_pg.db.database import Database
    from cbir_pg.ingest.worker import run_ingest

    name = f"cbir_expl_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    dsn = create_database(pg_server_dsn, name, template=template_db)
    root = Path(tempfile.mkdtemp(prefix="cbexpl", dir="/tmp"))
    seed_medmnist(dsn, data_dir, root, flags=("breastmnist", "pneumoniamnist"), per_split=per_split)
    for model in MODELS:
        run_ingest(Database(dsn), model, progress=False, batch_size=32, loader_workers=0, device="cpu")
    return name
