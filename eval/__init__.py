"""Evaluation: SQL top-N (:mod:`eval.topn`), pure metrics (:mod:`eval.metrics`), the retrieval
benchmark (:mod:`eval.retrieval`) and stored runs (:mod:`eval.store`), read by BI tools through the
``cbir_report`` views (``sql/schema/40_report.sql``).
"""

from __future__ import annotations
