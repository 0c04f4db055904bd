"""Revision 0005 (dataset grants, row-level security, the audit trail) downgrades to 0003 and upgrades
back to the same schema, policies included."""

from __future__ import annotations

from dbhelp import fetch_all

from cbir_pg.db.database import Database
from cbir_pg.db.migrate import current_revision, downgrade, migrate


def _access_fingerprint(dsn: str) -> tuple:
    """The policies, which tables have row-level security, and the columns."""
    policies = fetch_all(
        dsn,
        "select tablename, policyname, roles::text, cmd, qual from pg_policies where schemaname = 'cbir' order by 1, 2",
    )
    rls = fetch_all(
        dsn,
        "select relname, relrowsecurity from pg_class where relnamespace = 'cbir'::regnamespace"
        " and relkind = 'r' order by 1",
    )
    cols = fetch_all(
        dsn,
        "select table_name, column_name, data_type from information_schema.columns"
        " where table_schema in ('cbir', 'cbir_report') order by 1, 2",
    )
    return policies, rls, cols


def test_0005_downgrades_and_upgrades_back(db: str) -> None:
    before = _access_fingerprint(db)
    assert any(p[0] == "image" and p[1] == "reader_granted" for p in before[0])
    downgrade(Database(db), "0003")
    assert current_revision(Database(db)) == "0003"
    policies, rls, cols = _access_fingerprint(db)
    assert policies == [] and not any(on for _, on in rls)
    assert not {c[0] for c in cols} & {"audit_log", "dataset_grant"}
    migrate(Database(db))
    assert _access_fingerprint(db) == before
