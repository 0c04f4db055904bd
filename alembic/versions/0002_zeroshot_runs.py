"""Evaluation runs of kind 'zeroshot' (text-to-image retrieval and zero-shot classification, eval/zeroshot.py).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30
"""

from __future__ import annotations

from sqlfile import read_sql

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(read_sql("0002_zeroshot_runs.sql"))  # alembic/sql/0002_zeroshot_runs.sql


def downgrade() -> None:
    op.execute(read_sql("0002_zeroshot_runs.down.sql"))
