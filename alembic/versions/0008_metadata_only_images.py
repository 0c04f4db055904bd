"""Images imported without their pixels (issue 24: ``datasets import dkfz-splits --metadata-only``).

The SQL is in ``alembic/sql/0008_metadata_only_images.sql`` (and ``.down.sql``).

* ``cbir.image.local_pixels``: ``false`` for an image whose file is not on this machine (a
  ``--metadata-only`` import: labels, splits and patients from the published split CSVs, vectors from the
  published HDF5 files). P@N needs only labels, splits and vectors; search grids, the page's thumbnails
  and the report's example grids say "pixels not available" for such an image instead of failing.

Revision ID: 0008
Revises: 0004
Create Date: 2026-12-03
"""

from __future__ import annotations

from sqlfile import read_sql  # alembic/sqlfile.py

from alembic import op

revision = "0008"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(read_sql("0008_metadata_only_images.sql"))


def downgrade() -> None:
    op.execute(read_sql("0008_metadata_only_images.down.sql"))
