"""Revisions read their SQL from ``alembic/sql/<file>.sql``, so every schema change is reviewable as SQL:

    from sqlfile import sql_steps  # alembic/sqlfile.py

    revision = "0002"
    down_revision = "0001"
    upgrade, downgrade = sql_steps("0002_x")  # alembic/sql/0002_x.sql and 0002_x.down.sql

``env.py`` puts this folder on ``sys.path``, so ``from sqlfile import sql_steps`` works in a revision
(also when installed: the folder ships as ``cbir_pg/_resources/alembic``). A revision that needs more
than its two SQL files writes its own ``upgrade``/``downgrade`` with :func:`read_sql`.
"""

from __future__ import annotations

from collections.abc import Callable
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


def _execute(name: str) -> Callable[[], None]:
    def step() -> None:
        from alembic import op  # only inside a running migration

        op.execute(read_sql(name))

    step.__name__ = step.__qualname__ = name.removesuffix(".sql").replace(".", "_")
    return step


def sql_steps(stem: str) -> tuple[Callable[[], None], Callable[[], None]]:
    """A revision's ``upgrade`` and ``downgrade``: execute ``alembic/sql/<stem>.sql`` and
    ``alembic/sql/<stem>.down.sql``. Both names are checked at once, so a misspelt stem fails when the
    revision is loaded, not halfway through a migration."""
    for name in (f"{stem}.sql", f"{stem}.down.sql"):
        read_sql(name)
    return _execute(f"{stem}.sql"), _execute(f"{stem}.down.sql")
