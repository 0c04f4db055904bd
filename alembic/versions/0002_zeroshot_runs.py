"""Evaluation runs of kind 'zeroshot' (text-to-image retrieval and zero-shot classification, eval/zeroshot.py).

Create Date: 2026-11-30
"""

from __future__ import annotations

from sqlfile import sql_steps  # alembic/sqlfile.py: runs alembic/sql/<stem>.sql, <stem>.down.sql

revision = "0002"
down_revision = "0001"
upgrade, downgrade = sql_steps("0002_zeroshot_runs")
