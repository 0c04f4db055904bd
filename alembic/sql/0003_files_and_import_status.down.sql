-- Revision 0003 downgrade.
-- The report view reads all_embedded: drop it (and what depends on it) first; `cbir-pg db migrate`
-- re-creates every view of sql/schema.
drop view if exists cbir_report.eval_runs cascade;
alter table cbir.eval_run drop column if exists all_embedded;
alter table cbir.ingest_failure drop column if exists last_xact;
alter table cbir.dataset drop column if exists import_status;
