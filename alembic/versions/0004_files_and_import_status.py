"""Import status per dataset and vector coverage per evaluation run (issue 13, files and data integrity).

* ``cbir.dataset.import_status``: ``importing`` from the start of an import run until it finishes,
  then ``complete``. A killed import leaves ``importing`` (and ``imported_at`` null), and evaluation
  refuses the dataset until a rerun completes. The importer sets ``importing`` itself; the default
  (``complete``) is for datasets written directly in SQL. Rows that exist before this revision:
  ``complete`` where ``imported_at`` is set, else ``importing`` (an import that never finished).
* ``cbir.eval_run.all_embedded``: whether every image in the run's scope (datasets and splits, not
  excluded) had a vector when it ran; null for runs stored before this revision.
* ``cbir.ingest_failure.last_xact``: the transaction that counted the last attempt; the worker role
  records failures only through ``cbir.record_ingest_failure_v1`` (sql/schema/30_ingest.sql), which
  counts at most one attempt per transaction.

Revision ID: 0004
Revises: 0001
Create Date: 2026-11-30
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0001"
branch_labels = None
depends_on = None

UPGRADE = r"""
alter table cbir.dataset
  add column import_status text not null default 'complete'
  check (import_status in ('importing', 'complete'));
update cbir.dataset set import_status = 'importing' where imported_at is null;
comment on column cbir.dataset.import_status is
  'importing: an import run started and has not finished (killed or running); complete: the last run finished';

alter table cbir.ingest_failure add column last_xact xid8;
comment on column cbir.ingest_failure.last_xact is
  'transaction of the last counted attempt: cbir.record_ingest_failure_v1 counts one attempt per transaction';

alter table cbir.eval_run add column all_embedded boolean;
comment on column cbir.eval_run.all_embedded is
  'every non-excluded image of the run''s datasets and splits had a vector (null: not recorded)';
"""

DOWNGRADE = r"""
alter table cbir.eval_run drop column if exists all_embedded;
alter table cbir.ingest_failure drop column if exists last_xact;
alter table cbir.dataset drop column if exists import_status;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
