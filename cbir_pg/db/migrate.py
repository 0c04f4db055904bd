"""``cbir-pg db migrate``: alembic revisions (tables, columns, indexes), then the idempotent SQL in
``sql/schema/*.sql`` (functions, views, grants), re-applied every time in file-name order.

Both steps run under one advisory lock, so concurrent migrations on the same database serialise. The
lock is waited for at most ``CBIR_PG_LOCK_TIMEOUT`` seconds, and every statement of the migration runs
with that ``lock_timeout``: a session holding a lock (readers cannot take the advisory lock at all, see
:mod:`cbir_pg.db.locks`) delays a migration by at most that long, and the error names it.
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
    # revisions import their SQL steps (``from sqlfile import sql_steps``, alembic/sqlfile.py) when the
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


def apply_sql(db: Database, **connect_kwargs) -> list[str]:
    """Re-apply every ``sql/schema/*.sql`` file in one transaction."""
    files = schema_files()
    with db.connection(vector=False, **connect_kwargs) as conn:
        for name in files:
            conn.execute((sql_dir() / "schema" / name).read_text(encoding="utf-8"))
    return files


def _with_lock_timeout(dsn: str, seconds: float) -> str:
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    params = conninfo_to_dict(dsn)
    params["options"] = (str(params.get("options") or "") + f" -c lock_timeout={int(seconds * 1000)}").strip()
    return make_conninfo(**params)


def _is_lock_timeout(exc: BaseException) -> bool:
    import psycopg

    while exc is not None:
        if isinstance(exc, psycopg.errors.LockNotAvailable):
            return True
        exc = exc.__cause__ or getattr(exc, "orig", None) or exc.__context__
    return False


def migrate(db: Database, revision: str = "head") -> MigrationResult:
    """Upgrade to ``revision`` and re-apply the SQL functions and views. Safe to run twice."""
    from alembic import command
    from cbir_pg.db.locks import LockTimeoutError, advisory_lock, blockers, lock_timeout

    timeout = lock_timeout()
    lock_conn = db.connect(autocommit=True, vector=False)
    with lock_conn, advisory_lock(lock_conn, MIGRATION_LOCK, "db migrate", timeout):
        before = current_revision(db)
        try:
            with db_errors(catch=Exception):
                command.upgrade(_alembic_config(_with_lock_timeout(db.dsn, timeout)), revision)
            files = apply_sql(db, options=f"-c lock_timeout={int(timeout * 1000)}")
        except Exception as exc:
            if not _is_lock_timeout(exc) and "lock timeout" not in str(exc):
                raise
            raise LockTimeoutError(
                f"db migrate: gave up after {timeout:g} s waiting for a table lock held by"
                f" {blockers(lock_conn)} (wait longer with CBIR_PG_LOCK_TIMEOUT=SECONDS)"
            ) from None
        from cbir_pg.index import drop_stale_staging

        drop_stale_staging(db)  # a crashed index build's complete staging index
        return MigrationResult(before, current_revision(db), files)


def downgrade(db: Database, revision: str = "base") -> MigrationResult:
    from alembic import command

    before = current_revision(db)
    with db_errors(catch=Exception):
        command.downgrade(_alembic_config(db.dsn), revision)
    return MigrationResult(before, current_revision(db))
