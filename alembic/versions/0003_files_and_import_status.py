"""Import status per dataset and vector coverage per evaluation run (issue 13, files and data integrity).

* ``cbir.dataset.import_status``: ``importing`` from the start of an import run until it finishes,
  then ``complete``. A killed import leaves ``importing`` (and ``imported_at`` null), and evaluation
  refuses the dataset until a rerun completes. The importer sets ``importing`` itself; the default
  (``complete``) is for datasets written directly in SQL. Rows that exist before this revision:
  ``complete`` where ``imported_at`` is set, else ``importing`` (an import that never finished).
* ``cbir.eval_run.all_embedded``: whether every image in the run's scope (datasets and splits, not
  excluded) had a vector when it ran; null for runs stored before this revision.
* ``cbir.ingest_failure.last_xact``: the transaction that counted the last attempt; the worker role
  records failures only through ``cbir.record_ingest_failure_v1`` (sql/schema/30_ingest.sql), which
  counts at most one attempt per transaction.

Create Date: 2026-11-30
"""

from __future__ import annotations

from sqlfile import sql_steps  # alembic/sqlfile.py: runs alembic/sql/<stem>.sql, <stem>.down.sql

revision = "0003"
down_revision = "0002"
upgrade, downgrade = sql_steps("0003_files_and_import_status")
