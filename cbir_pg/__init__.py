"""cbir-pg: PostgreSQL-native content-based medical image retrieval.

Pipeline (one folder per step): datasets come in (:mod:`cbir_pg.datasets`), encoders embed them
(:mod:`cbir_pg.encoders`), the ingest workers store them (:mod:`ingest`), the HNSW index is built
(:mod:`cbir_pg.index`), then queries run (:mod:`cbir_pg.search`) and evaluation and reports are
produced (:mod:`eval`).
"""

from __future__ import annotations

__version__ = "0.1.0"
