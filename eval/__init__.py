"""Evaluation: SQL top-N (:mod:`cbir_pg.eval.topn`), pure metrics (:mod:`cbir_pg.eval.metrics`,
:mod:`cbir_pg.eval.classification`), the retrieval benchmark (:mod:`cbir_pg.eval.retrieval`), the
analyses (:mod:`cbir_pg.eval.knn`, :mod:`cbir_pg.eval.linear`, :mod:`cbir_pg.eval.ablation`, reading
splits through :mod:`cbir_pg.eval.data`), the report (:mod:`cbir_pg.eval.report`), and the one writer of
stored runs (:mod:`cbir_pg.eval.runs`), read by BI tools through the ``cbir_report`` views
(``sql/schema/40_report.sql``, ``50_analysis.sql``).
"""

from __future__ import annotations
