"""Subprocess driver for the fault tests (not a test module): runs the real ingest or import with a
slow-down hook, so the parent can kill it, restart the database under it, or run several at once.

    python fault_worker.py ingest DSN MODEL BATCH MARKERS DELAY BARRIER
    python fault_worker.py import DSN ROOT NAME BATCH DELAY

ingest: wraps ``cbir_pg.ingest.worker.copy_vectors``: after a batch's COPY (before its commit) it touches
``MARKERS/copied_<pid>_<n>``, waits for BARRIER processes to reach that point on their first batch
(0: no barrier), then sleeps DELAY seconds. Prints the run's summary as JSON on stdout.
import: wraps ``BulkLoader.load``: sleeps DELAY seconds after each committed batch.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from cbir_pg.db.database import Database


def _ingest(dsn: str, model: str, batch: int, markers: Path, delay: float, barrier: int) -> None:
    import cbir_pg.ingest.worker as worker

    original = worker.copy_vectors
    count = {"n": 0}

    def slow_copy(conn, key, ids, vectors, vector_type="vector"):
        n = original(conn, key, ids, vectors, vector_type)
        count["n"] += 1
        (markers / f"copied_{os.getpid()}_{count['n']}").touch()
        if barrier and count["n"] == 1:
            (markers / f"barrier_{os.getpid()}").touch()
            deadline = time.monotonic() + 120
            while len(list(markers.glob("barrier_*"))) < barrier and time.monotonic() < deadline:
                time.sleep(0.05)
        time.sleep(delay)
        return n

    worker.copy_vectors = slow_copy
    s = worker.run_ingest(
        Database(dsn), model, batch_size=batch, loader_workers=0, device="cpu", progress=False
    )
    print(
        json.dumps(
            {
                "embedded": s.embedded,
                "failed": s.failed,
                "done": s.done,
                "remaining": s.remaining,
                "batches": s.batches,
                "pid": os.getpid(),
            }
        )
    )


def _import(dsn: str, root: str, name: str, batch: int, delay: float) -> None:
    from cbir_pg.datasets import loader
    from cbir_pg.datasets.importer import import_dataset

    original = loader.BulkLoader.load

    def slow_load(self, rows):
        n = original(self, rows)
        time.sleep(delay)
        return n

    loader.BulkLoader.load = slow_load
    s = import_dataset(
        Database(dsn),
        "imagefolder",
        root,
        name=name,
        modality="US",
        region="breast",
        batch_size=batch,
        progress=False,
    )
    print(json.dumps({"imported": s.imported, "errors": s.errors}))


def main(argv: list[str]) -> None:
    mode = argv[0]
    if mode == "ingest":
        dsn, model, batch, markers, delay, barrier = argv[1:7]
        _ingest(dsn, model, int(batch), Path(markers), float(delay), int(barrier))
    elif mode == "import":
        dsn, root, name, batch, delay = argv[1:6]
        _import(dsn, root, name, int(batch), float(delay))
    else:
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    main(sys.argv[1:])
