"""Images imported without their pixels (issue 24: ``datasets import dkfz-splits --metadata-only``).

* ``cbir.image.local_pixels``: ``false`` for an image whose file is not on this machine (a
  ``--metadata-only`` import: labels, splits and patients from the published split CSVs, vectors from the
  published HDF5 files). P@N needs only labels, splits and vectors; search grids, the page's thumbnails
  and the report's example grids say "pixels not available" for such an image instead of failing.

Create Date: 2026-12-03
"""

from __future__ import annotations

from sqlfile import sql_steps  # alembic/sqlfile.py: runs alembic/sql/<stem>.sql, <stem>.down.sql

revision = "0008"
down_revision = "0004"
upgrade, downgrade = sql_steps("0008_metadata_only_images")
