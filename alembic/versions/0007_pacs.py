"""PACS service tables (issue 23): DICOMweb sources, ingest followers, a notification on new images.

* ``cbir.dicom_source``: one row per dataset imported from a PACS (``cbir-pg datasets import dicomweb``):
  the DICOMweb base URL (never with credentials), whether pixels were copied into the managed store, and
  the cursor ``--since last`` continues from.
* ``cbir.ingest_follower``: one row per ``cbir-pg ingest --follow`` process, its heartbeat and counts
  (``cbir-pg ingest status``).
* ``cbir.image.dicom_uids``: a PACS image's DICOM reference, as its own column.

The trigger ``image_notify_new`` on ``cbir.image`` (``pg_notify('cbir_new_images', '')`` once per
inserting statement, which followers LISTEN to) is made with its function by ``sql/schema/95_pacs.sql``,
re-applied after the revisions (databases migrated before keep the one this revision once made).

Create Date: 2026-12-03
"""

from __future__ import annotations

from sqlfile import sql_steps  # alembic/sqlfile.py: runs alembic/sql/<stem>.sql, <stem>.down.sql

revision = "0007"
down_revision = "0008"
upgrade, downgrade = sql_steps("0007_pacs")
