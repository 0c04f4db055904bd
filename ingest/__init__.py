"""Ingest: claim images without a vector → decode and preprocess in DataLoader workers → encode →
validate and L2-normalise → binary COPY, one transaction per batch (see :mod:`cbir_pg.ingest.claim`).

>>> from cbir_pg.ingest import run_ingest
>>> run_ingest(Database(dsn), "efficientnet_lite0")
"""

from __future__ import annotations

from cbir_pg.ingest.status import IngestStatusRow, ingest_status
from cbir_pg.ingest.worker import IngestSummary, run_ingest

__all__ = ["IngestStatusRow", "IngestSummary", "ingest_status", "run_ingest"]
