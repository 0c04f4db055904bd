"""Prepare the fusion benchmark database: BreastMNIST + PneumoniaMNIST with efficientnet_lite0 and
efficientnet_lite2 vectors (real offline weights) and an HNSW index per model, in an embedded server of
its own (``--home``, default ``/tmp/cbir-fusion``). Each step reuses what exists, so a rerun is fast.

    python -m bench.fusion_prepare [--home DIR]     # prints the DSN
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

MODELS = ("efficientnet_lite0", "efficientnet_lite2")


def prepare(home: Path, data_dir: Path) -> str:
    import psycopg

    from cbir_pg.datasets import import_medmnist_benchmark
    from cbir_pg.db.database import Database, scalar
    from cbir_pg.db.migrate import migrate
    from cbir_pg.db.server import EmbeddedServer
    from cbir_pg.index import build_index
    from cbir_pg.ingest.worker import run_ingest

    status = EmbeddedServer(home / "pg").start()
    admin = status.uri("postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        if not conn.execute("select 1 from pg_database where datname = 'fusion'").fetchone():
            conn.execute("create database fusion")
    dsn = status.uri("fusion")
    db = Database(dsn)
    migrate(db)
    with db.connection() as conn:
        n = scalar(conn, "select count(*) from cbir.image")
    if n == 0:
        import_medmnist_benchmark(db, data_dir, progress=False)
    for model in MODELS:
        run_ingest(db, model, progress=False, batch_size=64)
        build_index(db, model, progress=False, recall_queries=0)
    return dsn


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--home", type=Path, default=Path("/tmp/cbir-fusion"))
    ap.add_argument(
        "--data-dir", type=Path, default=Path(os.environ.get("CBIR_PG_DATA_DIR", "../shared/datasets"))
    )
    args = ap.parse_args()
    print(prepare(args.home, args.data_dir))


if __name__ == "__main__":
    main()
