"""Alembic environment for cbir-pg.

Run through ``cbir-pg db migrate`` (:func:`cbir_pg.db.migrate.migrate`), which passes the libpq DSN in
``config.attributes["dsn"]``. Plain ``alembic`` works from the repository root (``alembic.ini``) with
``-x dsn=...`` or ``CBIR_PG_DSN``, and without either on the embedded server of ``CBIR_PG_HOME`` (started
if needed), like every ``cbir-pg`` command; its ``upgrade`` then also re-applies ``sql/schema/*.sql``
(functions, views, grants), as ``cbir-pg db migrate`` does.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import psycopg
from sqlalchemy import create_engine, pool

from alembic import context

config = context.config
# revisions import their SQL reader: ``from sqlfile import read_sql`` (alembic/sqlfile.py)
sys.path.insert(0, str(Path(__file__).resolve().parent))


def _dsn() -> str:
    dsn = (
        config.attributes.get("dsn")
        or context.get_x_argument(as_dictionary=True).get("dsn")
        or os.environ.get("CBIR_PG_DSN")
    )
    if dsn:
        return dsn
    from cbir_pg.config import get_settings
    from cbir_pg.db.connect import embedded_dsn
    from cbir_pg.errors import CbirError

    try:
        return embedded_dsn(get_settings(None))
    except CbirError as exc:  # one line, as cbir-pg says it, not a traceback
        print(f"error: {exc} (or give alembic -x dsn=... or CBIR_PG_DSN)", file=sys.stderr)
        raise SystemExit(1) from None


def _plain_alembic_upgrade() -> bool:
    """True for ``alembic upgrade`` from the command line (not ``cbir-pg db migrate``, which re-applies
    the SQL files itself)."""
    cmd = getattr(config.cmd_opts, "cmd", None)
    return "dsn" not in config.attributes and bool(cmd) and getattr(cmd[0], "__name__", "") == "upgrade"


def run_migrations_online() -> None:
    dsn = _dsn()
    engine = create_engine(
        "postgresql+psycopg://", creator=lambda: psycopg.connect(dsn), poolclass=pool.NullPool
    )
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=None,
            version_table="alembic_version",
            version_table_schema="public",
            transaction_per_migration=True,
        )
        with context.begin_transaction():
            context.run_migrations()
    if _plain_alembic_upgrade():
        from cbir_pg.db.database import Database
        from cbir_pg.db.migrate import apply_sql

        apply_sql(Database(dsn))


if context.is_offline_mode():
    raise RuntimeError("cbir-pg migrations run online only")
run_migrations_online()
