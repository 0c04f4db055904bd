-- cbir_report holds views only (no state), so it is rebuilt from scratch on every migrate:
-- a view whose columns changed can then be redefined, which `create or replace view` cannot do.
drop schema if exists cbir_report cascade;
create schema cbir_report;
comment on schema cbir_report is 'read-only result views for BI tools (role cbir_reader)';
