-- Revision 0002 (alembic/versions/0002_files_and_import_status.py): import status per dataset,
-- vector coverage per evaluation run, the transaction of the last counted ingest attempt.
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
