-- Who may see what (issue 22; docs/serve.md "Users and datasets"). Re-applied by `cbir-pg db migrate`.
--
-- A person is a login role in cbir_reader (`cbir-pg db roles add alice --reader`). They see, in psql as
-- in `cbir-pg serve` (which runs their queries under `set local role alice`), the same thing:
--   * image metadata, labels, patients' sex and age, dataset names and the embedding vectors; never a
--     patient key, an image uri or a dataset root (column grants below);
--   * of those rows, only the datasets granted to a role whose privileges they have
--     (`cbir-pg db roles grant-dataset alice DATASET`, or `... cbir_reader DATASET` for every reader):
--     row-level security on cbir.dataset, cbir.image, cbir.patient, cbir.image_label and every
--     cbir.embedding_<model> (cbir.protect_embedding_table in 15_models.sql). The search
--     functions (20_search.sql, 25_fusion.sql) are security invoker and join cbir.image, so their
--     neighbours are the visible images only; cbir.image_file is executable by cbir_web alone.
-- The owner (the tables' owner, the superuser) bypasses the policies; cbir_web and cbir_worker see
-- every row (the server's own one-time-link owner session, and ingest).

grant usage on schema cbir to cbir_reader;
grant select on cbir.encoder, cbir.label, cbir.image_label, cbir.cohort to cbir_reader;
grant select (id, key, kind, name, source, licence, citation) on cbir.dataset to cbir_reader;
grant select (id, dataset_id, patient_id, content_hash, width, height, modality, body_region, view, split,
              label_id, excluded, exclusion_reason, duplicate_of, local_pixels)
  on cbir.image to cbir_reader;
grant select (id, sex, age) on cbir.patient to cbir_reader;
grant select on cbir.dataset_grant to cbir_reader;
revoke all on cbir.dataset_grant from cbir_worker;

-- every embedding table: readable by readers (the search functions read it as the caller), each row only
-- when its image is (cbir.protect_embedding_table, 15_models.sql)
do $$
declare r record;
begin
  for r in select e.table_name from cbir.encoder e
           where to_regclass(format('%I.%I', 'cbir', e.table_name)) is not null loop
    perform cbir.protect_embedding_table(r.table_name);
  end loop;
end
$$;

-- the audit trail: written by the server's role, read by the owner only, never changed by anyone
revoke all on cbir.audit_log from public, cbir_reader, cbir_worker, cbir_web;
grant insert on cbir.audit_log to cbir_web;

-- policies (dropped and re-created: `create or replace policy` does not exist)
do $$
declare p record;
begin
  for p in select tablename, policyname from pg_policies
           where schemaname = 'cbir' and tablename in ('dataset', 'image', 'patient', 'image_label', 'dataset_grant')
  loop
    execute format('drop policy %I on cbir.%I', p.policyname, p.tablename);
  end loop;
end
$$;

-- a reader sees the grants made to roles whose privileges it has (pg_roles is readable by everyone)
create policy reader_own_grants on cbir.dataset_grant for select to cbir_reader
  using (role_name in (select r.rolname from pg_catalog.pg_roles r
                       where pg_catalog.pg_has_role(current_user, r.oid, 'USAGE')));
-- The granted dataset ids are read once per statement (an array sub-select is an init plan), not once per
-- row, and never costed per row: with `in (select ...)` the planner charged the grants' scan to every probe
-- of cbir.image and chose to scan and materialise every image under a reader's HNSW search
-- (bench/notes_round3.md). Derived rows (labels here, vectors in 15_models.sql) are probed per row by the
-- image's primary key, for the same reason.
create policy reader_granted on cbir.dataset for select to cbir_reader
  using (id = any (array(select g.dataset_id from cbir.dataset_grant g)));
create policy reader_granted on cbir.image for select to cbir_reader
  using (dataset_id = any (array(select g.dataset_id from cbir.dataset_grant g)));
create policy reader_granted on cbir.patient for select to cbir_reader
  using (dataset_id = any (array(select g.dataset_id from cbir.dataset_grant g)));
create policy reader_granted on cbir.image_label for select to cbir_reader
  using ((select i.id from cbir.image i where i.id = image_id) is not null);

create policy web_all on cbir.dataset_grant for select to cbir_web using (true);
create policy web_all on cbir.dataset for select to cbir_web using (true);
create policy web_all on cbir.image for select to cbir_web using (true);
create policy web_all on cbir.patient for select to cbir_web using (true);
create policy web_all on cbir.image_label for select to cbir_web using (true);

create policy worker_all on cbir.dataset for all to cbir_worker using (true) with check (true);
create policy worker_all on cbir.image for all to cbir_worker using (true) with check (true);

-- cbir-pg serve runs a logged-in person's queries under `set local role NAME`: cbir_web needs the SET
-- option (not the privileges: inherit false) on every reader login. Run on every migrate and by
-- `cbir-pg db roles add`.
create or replace function cbir.grant_logins_to_web(role_name text default null)
returns integer
language sql volatile
set search_path = pg_catalog
as $fn$
  select cbir.apply_to_logins('cbir_reader', role_name, 'grant %I to cbir_web with inherit false, set true', 'cbir_web')
$fn$;
revoke all on function cbir.grant_logins_to_web(text) from public;
comment on function cbir.grant_logins_to_web(text) is
  'let cbir_web `set role` to every reader login (or role_name), without inheriting its privileges';

do $$
begin
  perform cbir.grant_logins_to_web();
exception when insufficient_privilege then
  raise notice 'cbir-pg: letting cbir_web act as reader logins needs a superuser or CREATEROLE; skipped (%)', sqlerrm;
end
$$;
