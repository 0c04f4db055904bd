"""Revisions read their SQL from ``alembic/sql/<file>.sql``, so every schema change is reviewable as SQL:

    from sqlfile import read_sql

    def upgrade() -> None:
        op.execute(read_sql("0002_x.sql"))

    def downgrade() -> None:
        op.execute(read_sql("0002_x.down.sql"))

``env.py`` puts this folder on ``sys.path``, so ``from sqlfile import read_sql`` works in a revision
(also when installed: the folder ships as ``cbir_pg/_resources/alembic``).
"""

from __future__ import annotations

from pathlib import Path

SQL_DIR = Path(__file__).resolve().parent / "sql"


def read_sql(name: str) -> str:
    """The text of ``alembic/sql/<name>``; a clear error when it is missing."""
    path = SQL_DIR / name
    if path.suffix != ".sql" or path.parent != SQL_DIR:
        raise ValueError(f"expected a file name like '0002_x.sql' in {SQL_DIR}, got {name!r}")
    if not path.is_file():
        raise FileNotFoundError(f"migration SQL file {path} not found")
    return path.read_text(encoding="utf-8")
