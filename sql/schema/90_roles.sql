-- Least-privilege roles (created by the first alembic revision; grants re-applied on every migrate).
--   cbir_reader: select on the cbir_report views only; no access to schema cbir (patients, images).
--   cbir_worker: claim work and write embeddings; no DDL, no reports.
-- Log-in users are granted a role:  create role alice login password '...' in role cbir_reader;
revoke all on schema cbir from public;
revoke all on schema cbir_report from public;

grant usage on schema cbir_report to cbir_reader;
grant select on all tables in schema cbir_report to cbir_reader;

grant usage on schema cbir to cbir_worker;
grant select on cbir.dataset, cbir.image, cbir.encoder, cbir.label to cbir_worker;
grant insert on cbir.error to cbir_worker;
grant usage on sequence cbir.error_id_seq to cbir_worker;
-- failures are written only through cbir.record_ingest_failure_v1 (30_ingest.sql), which sets the count
revoke insert, update, delete, truncate on cbir.ingest_failure from cbir_worker;
grant select on cbir.ingest_failure to cbir_worker;
