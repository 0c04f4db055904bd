"""Saved cohorts (issue 27, one cohort filter everywhere).

The SQL is in ``alembic/sql/0004_cohorts.sql`` (and ``.down.sql``).

* ``cbir.cohort``: a name, a filter (the jsonb ``cbir.similar_images_v2`` takes, validated by
  ``cbir.resolve_cohort`` in ``sql/schema/20_search.sql``) and/or a list of image ids, who saved it and
  when. ``cbir.save_cohort`` writes it; ``{"cohort": "name"}`` in any search uses it.

Revision ID: 0004
Revises: 0005
Create Date: 2026-12-03
"""

from __future__ import annotations

from sqlfile import read_sql  # alembic/sqlfile.py

from alembic import op

revision = "0004"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(read_sql("0004_cohorts.sql"))


def downgrade() -> None:
    op.execute(read_sql("0004_cohorts.down.sql"))
