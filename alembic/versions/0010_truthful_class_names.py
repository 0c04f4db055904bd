"""Truthful class names (issue 26, item 11): BreastMNIST's class 1 is "normal, benign", so its harmonised
key is ``US/breast/benign_or_normal``, not ``US/breast/normal``. New imports use the new key
(``cbir_pg/datasets/medmnist.py``); this revision renames the class in a database imported before.

Create Date: 2026-12-03
"""

from __future__ import annotations

from sqlfile import sql_steps  # alembic/sqlfile.py: runs alembic/sql/<stem>.sql, <stem>.down.sql

revision = "0010"
down_revision = "0007"
upgrade, downgrade = sql_steps("0010_truthful_class_names")
