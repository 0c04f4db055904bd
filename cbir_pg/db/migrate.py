"""``cbir-pg db migrate``: alembic revisions (tables, columns, indexes), then the idempotent SQL in
``sql/schema/*.sql`` (functions, views, grants), re-applied every time in file-name order.

Both steps run under one advisory lock, so concurrent migrations on the same database serialise.
"""

from __future__ import annotations

import io
import sys
from dataclasses import dataclass, field

from cbir_pg.db.database import Database, db_errors, scalar
from cbir_pg.resources import alembic_dir, sql_dir

MIGRATION_LOCK = 0x0C_B1_70_01


@dataclass
class MigrationResult:
    before: str | None
    after: str | None
    sql_files: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return self.before != self.after


def _alembic_config(dsn: str):
    from alembic.config import Config

    cfg = Config(stdout=io.StringIO())
    folder = str(alembic_dir())
    # revisions import their SQL reader (``from sqlfile import read_sql``, alembic/sqlfile.py) when the
    # script directory loads them, also outside env.py (e.g. head_revision)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    cfg.set_main_option("script_location", folder)
    cfg.attributes["dsn"] = dsn
    return cfg


def current_revision(db: Database) -> str | None:
    with db.connect(vector=False) as conn:
        if not scalar(conn, "select to_regclass('public.alembic_version') is not null"):
            return None
        return scalar(conn, "select version_num from public.alembic_version")


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_alembic_config("")).get_current_head()


def schema_files() -> list[str]:
    return sorted(p.name for p in (sql_dir() / "schema").glob("*.sql"))


def apply_sql(db: Database) -> list[str]:
    """Re-apply every ``sql/schema/*.sql`` file in one transaction."""
    files = schema_files()
    with db.connection(vector=False) as conn:
        for name in files:
            conn.execute((sql_dir() / "schema" / name).read_text(encoding="utf-8"))
    return files


def migrate(db: Database, revision: str = "head") -> MigrationResult:
    """Upgrade to ``revision`` and re-apply the SQL functions and views. Safe to run twice."""
    from alembic import command

    with db.connect(autocommit=True, vector=False) as lock_conn:
        lock_conn.execute("select pg_advisory_lock(%s)", (MIGRATION_LOCK,))
        try:
            before = current_revision(db)
            with db_errors(catch=Exception):
                command.upgrade(_alembic_config(db.dsn), revision)
            files = apply_sql(db)
            return MigrationResult(before, current_revision(db), files)
        finally:
            lock_conn.execute("select pg_advisory_unlock(%s)", (MIGRATION_LOCK,))


def downgrade(db: Database, revision: str = "base") -> MigrationResult:
    from alembic import command

    before = current_revision(db)
    with db_errors(catch=Exception):
        command.downgrade(_alembic_config(db.dsn), revision)
    return MigrationResult(before, current_revision(db))
