"""A partial index of the excluded images (issue 25: search at the bare statement's cost).

``cbir.image_excluded`` holds only the rows with ``excluded``: asking whether any image is excluded reads
an index that is empty in the usual case, so a search without an image filter (split, dataset, label,
patient, ...) can skip looking each index row's image up (``cbir.knn__<model>``, 20_search.sql).

Create Date: 2026-12-03
"""

from __future__ import annotations

from sqlfile import sql_steps  # alembic/sqlfile.py: runs alembic/sql/<stem>.sql, <stem>.down.sql

revision = "0011"
down_revision = "0009"
upgrade, downgrade = sql_steps("0011_excluded_index")
