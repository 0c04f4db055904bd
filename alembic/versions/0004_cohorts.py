"""Saved cohorts (issue 27, one cohort filter everywhere).

* ``cbir.cohort``: a name, a filter (the jsonb ``cbir.similar_images_v2`` takes, validated by
  ``cbir.resolve_cohort`` in ``sql/schema/20_search.sql``) and/or a list of image ids, who saved it and
  when. ``cbir.save_cohort`` writes it; ``{"cohort": "name"}`` in any search uses it.

Create Date: 2026-12-03
"""

from __future__ import annotations

from sqlfile import sql_steps  # alembic/sqlfile.py: runs alembic/sql/<stem>.sql, <stem>.down.sql

revision = "0004"
down_revision = "0005"
upgrade, downgrade = sql_steps("0004_cohorts")
