"""Alembic environment for cbir-pg.

Run through ``cbir-pg db migrate`` (:func:`cbir_pg.db.migrate.migrate`), which passes the libpq DSN in
``config.attributes["dsn"]``; plain ``alembic`` also works with ``-x dsn=...``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import psycopg
from sqlalchemy import create_engine, pool

from alembic import context

config = context.config
# revisions import their SQL reader: ``from sqlfile import read_sql`` (alembic/sqlfile.py)
sys.path.insert(0, str(Path(__file__).resolve().parent))


def _dsn() -> str:
    dsn = config.attributes.get("dsn") or context.get_x_argument(as_dictionary=True).get("dsn")
    if not dsn:
        raise RuntimeError("no DSN: run `cbir-pg db migrate` or `alembic -x dsn=... upgrade head`")
    return dsn


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


if context.is_offline_mode():
    raise RuntimeError("cbir-pg migrations run online only")
run_migrations_online()
