"""Least-privilege roles (issue 8): log in as a member of ``cbir_reader`` and of ``cbir_worker`` and
check what each can and cannot do.

- ``cbir_reader`` selects from the ``cbir_report`` views and, since issue 22, the image metadata that
  ``cbir-pg serve`` shows (under row-level security: only datasets granted to it, see
  ``tests/serve/test_access.py``); it can never read patient identifiers, image paths or dataset roots
  (column grants: patient keys, uris, roots, the installation's salt stay out of reach).
- ``cbir_worker`` claims work (``FOR UPDATE SKIP LOCKED`` on ``cbir.image``) and writes embeddings
  (insert and binary COPY); it cannot alter the schema, delete vectors or read reports or patients.

Every role but the superuser logs in with its scram-sha-256 password (``pg_hba.conf``), so each test
role gets one and the DSN carries it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import numpy as np
import psycopg
import pytest
from datasets_fixtures import store_eval_run, store_metrics, store_vectors
from psycopg import errors, sql
from relhelp import dsn_with

from cbir_pg.db import identifiers
from cbir_pg.db.database import Database

PATIENT_KEY = "pk-7f3a-do-not-leak"
MODEL = "roles_probe"
DIM = 8


@pytest.fixture
def seeded(db: str) -> str:
    """A migrated clone holding a dataset, a patient, two images, an embedding table and an eval run
    (so every report view has something to show)."""
    with psycopg.connect(db) as c:
        ds = c.execute(
            "insert into cbir.dataset (key, kind, name) values ('roles_ds', 'csv', 'R') returning id"
        ).fetchone()[0]
        pid = c.execute(
            "insert into cbir.patient (dataset_id, patient_key) values (%s, %s) returning id",
            (ds, PATIENT_KEY),
        ).fetchone()[0]
        lab = c.execute(
            "insert into cbir.label (key, modality, region, finding, kind) values"
            " ('XR/chest/normal', 'XR', 'chest', 'normal', 'anatomical') returning id"
        ).fetchone()[0]
        for n in range(3):
            c.execute(
                "insert into cbir.image (dataset_id, patient_id, uri, split, label_id) values (%s, %s, %s, 'test', %s)",
                (ds, pid, f"img_{n}.png", lab),
            )
        store_vectors(c, MODEL, [], np.empty((0, DIM), np.float32), family="tiny")  # no vector yet
        run = store_eval_run(c, "retrieval", MODEL, "exact", '{"datasets": ["roles_ds"]}')
        store_metrics(c, run, [("P", 1, "micro", 0.5)])
        c.execute(
            "insert into cbir.eval_class_metric (run_id, label_id, metric, at, n_queries, class_index_size, value)"
            " values (%s, %s, 'P', 1, 3, 3, 0.5)",
            (run, lab),
        )
    return db


@pytest.fixture
def login(pg_server_dsn: str) -> Iterator:
    """Factory: ``login(db_dsn, 'cbir_reader') -> dsn`` of a fresh LOGIN role that is a member of the
    group role; the roles are dropped after the test."""
    made: list[tuple[str, str]] = []

    def make(db: str, group: str) -> str:
        name = f"t_{group}_{uuid.uuid4().hex[:8]}"
        password = uuid.uuid4().hex
        with psycopg.connect(pg_server_dsn, autocommit=True) as c:
            c.execute(
                sql.SQL("create role {} login password {} in role {}").format(
                    sql.Identifier(name), sql.Literal(password), sql.Identifier(group)
                )
            )
        if group == "cbir_worker":  # what `cbir-pg db roles add --worker` (or the next migrate) sets
            with psycopg.connect(db, autocommit=True) as c:
                c.execute("select cbir.apply_worker_attributes(%s)", (name,))
        made.append((name, db))
        return dsn_with(db, user=name, password=password)

    yield make
    with psycopg.connect(pg_server_dsn, autocommit=True) as c:
        for name, db in made:
            # the role may own nothing, but drop owned also clears its grants in that database
            with psycopg.connect(db, autocommit=True) as dc:
                dc.execute(sql.SQL("drop owned by {}").format(sql.Identifier(name)))
            c.execute(sql.SQL("drop role if exists {}").format(sql.Identifier(name)))


def _denied(dsn: str, statement: str, params=None) -> bool:
    """Whether ``statement`` is refused for lack of privilege (nothing is committed either way)."""
    with psycopg.connect(dsn) as c:
        try:
            c.execute(statement, params)
        except errors.InsufficientPrivilege:
            return True
        finally:
            c.rollback()
    return False


def _report_views(dsn: str) -> list[str]:
    with psycopg.connect(dsn) as c:
        return [
            r[0]
            for r in c.execute(
                "select table_name from information_schema.views where table_schema = 'cbir_report' order by 1"
            )
        ]


# --------------------------------------------------------------------------- cbir_reader
def test_reader_can_select_every_report_view(seeded: str, login) -> None:
    views = _report_views(seeded)
    assert views, "no cbir_report views: the reader would have nothing to read"
    reader = login(seeded, "cbir_reader")
    with psycopg.connect(reader) as c:
        for view in views:
            c.execute(
                sql.SQL("select * from {} limit 5").format(sql.Identifier("cbir_report", view))
            ).fetchall()
        board = c.execute("select model, p1_micro from cbir_report.leaderboard").fetchall()
    assert (MODEL, 0.5) in board


def test_reader_never_sees_a_patient_identifier(seeded: str, login) -> None:
    """No report view column is a patient key, and no value the reader can select holds one."""
    reader = login(seeded, "cbir_reader")
    with psycopg.connect(reader) as c:
        for view in _report_views(seeded):
            cur = c.execute(sql.SQL("select * from {}").format(sql.Identifier("cbir_report", view)))
            cols = [d.name for d in cur.description]
            assert "patient_key" not in cols, f"cbir_report.{view} exposes patient_key"
            for row in cur.fetchall():
                assert PATIENT_KEY not in repr(row), f"cbir_report.{view} shows a patient key"
        salt = c.execute(
            "select count(*) from information_schema.column_privileges where table_name = 'installation'"
            " or (table_name = 'patient' and column_name in ('patient_key', 'extra'))"
            " or (table_name = 'image' and column_name in ('uri', 'extra', 'source_labels'))"
            " or (table_name = 'dataset' and column_name = 'root')"
        ).fetchone()[0]
    assert salt == 0


def test_reader_grants_survive_remigration(seeded: str, login) -> None:
    """``cbir-pg db migrate`` rebuilds cbir_report: the reader must still read it afterwards."""
    from cbir_pg.db.migrate import migrate

    migrate(Database(seeded))
    reader = login(seeded, "cbir_reader")
    with psycopg.connect(reader) as c:
        for view in _report_views(seeded):
            c.execute(
                sql.SQL("select count(*) from {}").format(sql.Identifier("cbir_report", view))
            ).fetchone()


# --------------------------------------------------------------------------- cbir_worker
def _claim(conn: psycopg.Connection, n: int = 2) -> list[tuple]:
    """The ingest worker's own claim query (``sql/queries/ingest.sql``: FOR NO KEY UPDATE SKIP LOCKED)."""
    from cbir_pg.db import queries

    q = queries.get("ingest", "claim", table=identifiers.embedding_table(MODEL))
    params = {"encoder": MODEL, "datasets": None, "splits": None, "max_attempts": 3, "batch": n, "after": 0}
    return conn.execute(q, params).fetchall()


def test_worker_can_claim_and_write_embeddings(seeded: str, login) -> None:
    """The ingest transaction as cbir_worker: claim with SKIP LOCKED, insert and binary COPY vectors."""
    from pgvector.psycopg import register_vector

    worker = login(seeded, "cbir_worker")
    with psycopg.connect(worker) as c:
        register_vector(c)
        claimed = _claim(c)
        assert len(claimed) == 2
        c.execute(
            sql.SQL("insert into {} (image_id, embedding) values (%s, %s)").format(
                identifiers.embedding_table(MODEL)
            ),
            (claimed[0][0], np.ones(DIM, dtype=np.float32)),
        )
        copy = sql.SQL("copy {} (image_id, embedding) from stdin (format binary)").format(
            identifiers.embedding_table(MODEL)
        )
        with c.cursor().copy(copy) as cp:
            cp.set_types(["int8", "vector"])
            cp.write_row((claimed[1][0], np.arange(DIM, dtype=np.float32) + 1))
        c.execute(
            "insert into cbir.error (stage, encoder_key, source, reason, message) values ('ingest', %s, 'x', 'r', 'm')",
            (MODEL,),
        )
        c.commit()
    with psycopg.connect(seeded) as c:
        n = c.execute(
            sql.SQL("select count(*) from {}").format(identifiers.embedding_table(MODEL))
        ).fetchone()[0]
    assert n == 2


def test_two_workers_claim_disjoint_batches(seeded: str, login) -> None:
    """SKIP LOCKED as cbir_worker: a second worker skips the rows the first holds."""
    w1, w2 = login(seeded, "cbir_worker"), login(seeded, "cbir_worker")
    with psycopg.connect(w1) as c1, psycopg.connect(w2) as c2:
        a = {r[0] for r in _claim(c1)}
        b = {r[0] for r in _claim(c2)}
        assert a and b and not (a & b)


# --------------------------------------------------------------------------- what each group role may not do
#: refused to every group role: patient rows, the installation's salt, new schemas, tables anywhere
DENIED_TO_EVERY_ROLE = [
    "select * from cbir.patient",
    "select * from cbir.installation",
    "create table cbir.x (a int)",
    "create table public.x (a int)",
    "create schema sneaky",
]
DENIED = {
    "cbir_reader": [
        "select patient_key from cbir.patient",
        "select * from cbir.image",
        "select uri from cbir.image",
        "select * from cbir.dataset",
        "select * from cbir.study",
        "select * from cbir.eval_query",
        "select cbir.image_file(1)",
        "insert into cbir.dataset_grant (dataset_id, role_name) values (1, current_user)",
        "select * from cbir.audit_log",
        "insert into cbir_report.eval_runs (run_id) values (1)",
        "delete from cbir.eval_run",
        "create table cbir_report.x (a int)",
    ],
    "cbir_worker": [
        "alter table cbir.image add column leak text",
        "alter table cbir.image drop column uri",
        f"alter table cbir.embedding_{MODEL} add column leak text",
        f"drop table cbir.embedding_{MODEL}",
        "drop table cbir.image",
        f"truncate cbir.embedding_{MODEL}",
        f"delete from cbir.embedding_{MODEL}",
        f"update cbir.embedding_{MODEL} set embedding = embedding",
        f"create index on cbir.embedding_{MODEL} (image_id)",
        "update cbir.image set label_id = null",
        "delete from cbir.image",
        "select * from cbir.eval_run",
        "select * from cbir_report.eval_runs",
        "select * from cbir_report.leaderboard",
        "grant cbir_reader to current_user",
    ],
}


@pytest.mark.parametrize(
    "role, statement", [(role, s) for role, own in DENIED.items() for s in [*own, *DENIED_TO_EVERY_ROLE]]
)
def test_group_role_is_denied(seeded: str, login, role: str, statement: str) -> None:
    assert _denied(login(seeded, role), statement), f"{role} may run: {statement}"


def test_group_roles_cannot_log_in(seeded: str) -> None:
    """The group roles themselves are NOLOGIN: people log in as their own members of them."""
    with psycopg.connect(seeded) as c:
        rows = dict(
            c.execute(
                "select rolname, rolcanlogin from pg_roles where rolname in ('cbir_reader', 'cbir_worker')"
            ).fetchall()
        )
        supers = c.execute(
            "select count(*) from pg_roles where rolname in ('cbir_reader', 'cbir_worker')"
            " and (rolsuper or rolcreaterole or rolcreatedb or rolbypassrls)"
        ).fetchone()[0]
    assert rows == {"cbir_reader": False, "cbir_worker": False}
    assert supers == 0


def test_worker_logins_bypass_row_security_so_ingest_can_copy(seeded: str, pg_server_dsn: str) -> None:
    """The embedding tables have row-level security (readers see only their datasets' vectors), and
    PostgreSQL refuses COPY into such a table for a role that does not bypass it: `roles add --worker`
    and every migrate give each worker login BYPASSRLS; a reader login never gets it."""
    from cbir_pg.db.migrate import migrate
    from cbir_pg.db.roles import add_role, drop_role

    raw = f"t_raw_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(seeded, autocommit=True) as c:
        c.execute(sql.SQL("create role {} login in role cbir_worker").format(sql.Identifier(raw)))
        made = add_role(c, f"t_w_{uuid.uuid4().hex[:8]}", "worker")
        reader = add_role(c, f"t_r_{uuid.uuid4().hex[:8]}", "reader")
    try:

        def bypass(name: str) -> bool:
            with psycopg.connect(seeded) as c:
                return c.execute("select rolbypassrls from pg_roles where rolname = %s", (name,)).fetchone()[
                    0
                ]

        assert bypass(made.name) and not bypass(raw) and not bypass(reader.name)
        migrate(Database(seeded))
        assert bypass(raw) and not bypass(reader.name)
        with psycopg.connect(seeded) as c:
            assert c.execute(
                "select relrowsecurity from pg_class where oid = %s::regclass",
                (f"cbir.embedding_{MODEL}",),
            ).fetchone()[0]
    finally:
        with psycopg.connect(seeded, autocommit=True) as c:
            for name in (raw, made.name, reader.name):
                drop_role(c, name)
