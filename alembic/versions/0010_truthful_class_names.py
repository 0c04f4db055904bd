"""Truthful class names (issue 26, item 11): BreastMNIST's class 1 is "normal, benign", so its harmonised
key is ``US/breast/benign_or_normal``, not ``US/breast/normal``. New imports use the new key
(``cbir_pg/datasets/medmnist.py``); this revision renames the class in a database imported before.

The SQL is in ``alembic/sql/0010_truthful_class_names.sql`` (and ``.down.sql``).

Revision ID: 0010
Revises: 0007
Create Date: 2026-12-03
"""

from __future__ import annotations

from sqlfile import read_sql  # alembic/sqlfile.py

from alembic import op

revision = "0010"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(read_sql("0010_truthful_class_names.sql"))


def downgrade() -> None:
    op.execute(read_sql("0010_truthful_class_names.down.sql"))
