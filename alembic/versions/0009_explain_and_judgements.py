"""Similarity-map faithfulness and relevance judgements (issue 28).

* ``cbir.explain_faithfulness``: one row per ``cbir-pg eval explain`` run and method: deletion and
  insertion areas against a random cell order, time per map; the page labels a method no better than
  random.
* ``cbir.judgement``: a user's verdict (relevant / not relevant, optional reason) on one neighbour of a
  query (a stored image or an upload's pixel hash) under one model; ``username`` defaults to
  ``current_user``. Row-level security: a user reads and writes only their own rows; members of the new
  role ``cbir_judgement_reader`` read all; the owner reads all; BI readers see a de-identified view.

Create Date: 2026-12-03
"""

from __future__ import annotations

from sqlfile import sql_steps  # alembic/sqlfile.py: runs alembic/sql/<stem>.sql, <stem>.down.sql

revision = "0009"
down_revision = "0010"
upgrade, downgrade = sql_steps("0009_explain_and_judgements")
