"""PACS service tables (issue 23): DICOMweb sources, ingest followers, a notification on new images.

The SQL is in ``alembic/sql/0007_pacs.sql`` (and ``.down.sql``).

* ``cbir.dicom_source``: one row per dataset imported from a PACS (``cbir-pg datasets import dicomweb``):
  the DICOMweb base URL (never with credentials), whether pixels were copied into the managed store, and
  the cursor ``--since last`` continues from.
* ``cbir.ingest_follower``: one row per ``cbir-pg ingest --follow`` process, its heartbeat and counts
  (``cbir-pg ingest status``).
* trigger ``image_notify_new`` on ``cbir.image``: ``pg_notify('cbir_new_images', dataset key)`` once per
  inserting statement, which followers LISTEN to (they also poll, so a lost notification only delays).

Revision ID: 0007
Revises: 0008
Create Date: 2026-12-03
"""

from __future__ import annotations

from sqlfile import read_sql

from alembic import op

revision = "0007"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(read_sql("0007_pacs.sql"))


def downgrade() -> None:
    op.execute(read_sql("0007_pacs.down.sql"))
