-- Revision 0002 downgrade.
alter table cbir.eval_run drop column if exists all_embedded;
alter table cbir.ingest_failure drop column if exists last_xact;
alter table cbir.dataset drop column if exists import_status;
