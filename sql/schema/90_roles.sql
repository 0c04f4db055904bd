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
grant select, insert, update on cbir.ingest_failure to cbir_worker;

-- cbir_web: the login role `cbir-pg serve` connects as (least privilege; docs/serve.md).
--   It runs the search functions and reads image metadata, labels, encoders and the cbir_report views.
--   It can read neither cbir.patient.patient_key / extra, nor cbir.image.uri / source_labels / extra,
--   nor cbir.dataset.root: a response can only ever hold what these grants let it read.
--   `cbir-pg serve` gives it LOGIN and a generated password, and grants SELECT on each embedding table.
do $$
begin
  if not exists (select from pg_roles where rolname = 'cbir_web') then
    create role cbir_web nologin;
  end if;
end
$$;
grant usage on schema cbir to cbir_web;
grant cbir_reader to cbir_web;
grant select on cbir.encoder, cbir.label, cbir.image_label to cbir_web;
grant select (id, key, kind, name, source, licence, citation) on cbir.dataset to cbir_web;
grant select (id, dataset_id, patient_id, content_hash, width, height, modality, body_region, view, split,
              label_id, excluded, exclusion_reason, duplicate_of)
  on cbir.image to cbir_web;
grant select (id, sex, age) on cbir.patient to cbir_web;

-- The one way cbir_web reaches pixels: the file of one image, by id, for the server to open and decode.
-- It never returns more than one path per call, and the server never puts it in a response.
create or replace function cbir.image_file(p_image_id bigint)
returns text
language sql stable security definer
set search_path = pg_catalog, pg_temp
as $$
  select case when d.root is null or d.root = '' then i.uri else d.root || '/' || i.uri end
  from cbir.image i join cbir.dataset d on d.id = i.dataset_id
  where i.id = p_image_id
$$;
comment on function cbir.image_file(bigint) is
  'server-side file of one image (dataset root / uri), for cbir-pg serve to decode; executable by cbir_web only';
revoke all on function cbir.image_file(bigint) from public;
grant execute on function cbir.image_file(bigint) to cbir_web;
