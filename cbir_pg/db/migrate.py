"""``cbir-pg db migrate``: alembic revisions (tables, columns, indexes), then the idempotent SQL in
``sql/schema/*.sql`` (functions, views, grants), re-applied every time in file-name order.

Both steps run under one advisory lock, so concurrent migrations on the same database serialise.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

from cbir_pg.db.connect import connect, translate
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
    cfg.set_main_option("script_location", str(alembic_dir()))
    cfg.attributes["dsn"] = dsn
    return cfg


def current_revision(dsn: str) -> str | None:
    with connect(dsn, vector=False) as conn:
        exists = conn.execute("select to_regclass('public.alembic_version') is not null").fetchone()[0]
        if not exists:
            return None
        row = conn.execute("select version_num from public.alembic_version").fetchone()
        return row[0] if row else None


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_alembic_config("")).get_current_head()


def schema_files() -> list[str]:
    return sorted(p.name for p in (sql_dir() / "schema").glob("*.sql"))


def apply_sql(dsn: str) -> list[str]:
    """Re-apply every ``sql/schema/*.sql`` file in one transaction."""
    files = schema_files()
    with connect(dsn, vector=False) as conn:
        try:
            for name in files:
                conn.execute((sql_dir() / "schema" / name).read_text(encoding="utf-8"))
            conn.commit()
        except Exception as exc:
            raise translate(exc) from None
    return files


def migrate(dsn: str, revision: str = "head") -> MigrationResult:
    """Upgrade to ``revision`` and re-apply the SQL functions and views. Safe to run twice."""
    from alembic import command

    with connect(dsn, autocommit=True, vector=False) as lock_conn:
        lock_conn.execute("select pg_advisory_lock(%s)", (MIGRATION_LOCK,))
        try:
            before = current_revision(dsn)
            try:
                command.upgrade(_alembic_config(dsn), revision)
            except Exception as exc:
                raise translate(exc) from None
            files = apply_sql(dsn)
            return MigrationResult(before, current_revision(dsn), files)
        finally:
            lock_conn.execute("select pg_advisory_unlock(%s)", (MIGRATION_LOCK,))


def downgrade(dsn: str, revision: str = "base") -> MigrationResult:
    from alembic import command

    before = current_revision(dsn)
    try:
        command.downgrade(_alembic_config(dsn), revision)
    except Exception as exc:
        raise translate(exc) from None
    return MigrationResult(before, current_revision(dsn))
