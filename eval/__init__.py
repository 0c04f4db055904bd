"""Evaluation: SQL top-N (:mod:`cbir_pg.eval.topn`), pure metrics (:mod:`cbir_pg.eval.metrics`), the retrieval
benchmark (:mod:`cbir_pg.eval.retrieval`) and stored runs (:mod:`cbir_pg.eval.store`), read by BI tools through the
``cbir_report`` views (``sql/schema/40_report.sql``).
"""

from __future__ import annotations
