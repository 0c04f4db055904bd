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

-- Resource limits (issue 13). A reader (a BI tool, a person) must never lock the workers or the owner
-- out, run a statement forever, fill the disk with temp files or store data through large objects.
--   * connections: the server keeps superuser_reserved_connections for the owner and
--     reserved_connections for roles with pg_use_reserved_connections (cbir_worker members), see
--     cbir_pg/db/server.py; each reader login is also capped by its own CONNECTION LIMIT.
--   * per-login settings: role settings and connection limits are not inherited from a group role, so
--     cbir.apply_reader_limits() sets them on every LOGIN member of cbir_reader (run below on every
--     migrate and by `cbir-pg db roles add`).
create or replace function cbir.reader_limits_v1()
returns table (setting text, value text)
language sql
immutable
set search_path = pg_catalog
as $fn$
  values ('connection_limit', '10'),
         ('statement_timeout', '2min'),
         ('temp_file_limit', '1GB'),
         ('idle_in_transaction_session_timeout', '5min')
$fn$;
comment on function cbir.reader_limits_v1() is
  'the limits every LOGIN member of cbir_reader gets (cbir.apply_reader_limits)';

-- The LOGIN members of a group role (or the one named p_role among them), superusers and the group
-- itself left out: the people and tools the per-login settings below are applied to.
create or replace function cbir.login_members(p_group text, p_role text default null)
returns table (rolname name, rolconnlimit integer, rolbypassrls boolean, role_oid oid)
language sql stable
set search_path = pg_catalog
as $fn$
  select m.rolname, m.rolconnlimit, m.rolbypassrls, m.oid from pg_catalog.pg_roles m
  where m.rolcanlogin and not m.rolsuper and m.rolname <> p_group
    and pg_catalog.pg_has_role(m.oid, p_group, 'MEMBER')
    and (p_role is null or m.rolname = p_role)
$fn$;
revoke all on function cbir.login_members(text, text) from public;
comment on function cbir.login_members(text, text) is
  'the LOGIN members of group p_group (or p_role among them), not superusers';

-- Run one statement for each LOGIN member of p_group (or p_role among them) that is not a member of
-- p_unless_member_of: format(p_statement, login name). Returns how many. The owner's alone.
create or replace function cbir.apply_to_logins(
  p_group text, p_role text, p_statement text, p_unless_member_of text default null)
returns integer
language plpgsql volatile
set search_path = pg_catalog
as $fn$
declare
  r record;
  n integer := 0;
begin
  for r in
    select * from cbir.login_members(p_group, p_role) m
    where p_unless_member_of is null or not pg_catalog.pg_has_role(m.role_oid, p_unless_member_of, 'MEMBER')
  loop
    execute format(p_statement, r.rolname);
    n := n + 1;
  end loop;
  return n;
end
$fn$;
revoke all on function cbir.apply_to_logins(text, text, text, text) from public;

-- A group role made once, on the first migrate that needs it (NOLOGIN: logins are its members).
create or replace function cbir.ensure_group_role(p_name text) returns void
language plpgsql volatile
set search_path = pg_catalog
as $fn$
begin
  if not exists (select from pg_catalog.pg_roles where rolname = p_name) then
    execute format('create role %I nologin', p_name);
  end if;
end
$fn$;
revoke all on function cbir.ensure_group_role(text) from public;

create or replace function cbir.apply_reader_limits(role_name text default null)
returns integer
language plpgsql
volatile
set search_path = pg_catalog
as $fn$
declare
  r record;
  l record;
  n integer := 0;
  conn_limit integer := (select value::integer from cbir.reader_limits_v1() where setting = 'connection_limit');
begin
  for r in select * from cbir.login_members('cbir_reader', role_name) loop
    if r.rolconnlimit < 0 or r.rolconnlimit > conn_limit then
      execute format('alter role %I connection limit %s', r.rolname, conn_limit);
    end if;
    for l in select setting, value from cbir.reader_limits_v1() where setting <> 'connection_limit' loop
      execute format('alter role %I set %I = %L', r.rolname, l.setting, l.value);
    end loop;
    n := n + 1;
  end loop;
  return n;
end
$fn$;
revoke all on function cbir.apply_reader_limits(text) from public;
comment on function cbir.apply_reader_limits(text) is
  'set cbir.reader_limits_v1() on every LOGIN member of cbir_reader (or on role_name); returns how many';

-- A worker login bypasses row-level security (issue 22). Ingest writes vectors with COPY, which
-- PostgreSQL refuses on a table with row security (every cbir.embedding_<model>, 15_models.sql) for a role
-- that does not bypass it; and a worker sees every row of what it may read anyway (the worker_all
-- policies of 92_access.sql), so bypassing them shows it nothing new: BYPASSRLS grants no privilege on a
-- table, and cbir_worker has none on patients, grants, judgements or the audit trail. Like the reader
-- limits, the attribute is not inherited from the group: it is set on every LOGIN member of cbir_worker
-- (below on every migrate, and by `cbir-pg db roles add --worker`).
create or replace function cbir.apply_worker_attributes(role_name text default null)
returns integer
language sql volatile
set search_path = pg_catalog
as $fn$
  select cbir.apply_to_logins('cbir_worker', role_name, 'alter role %I bypassrls', 'cbir_reader')
$fn$;
revoke all on function cbir.apply_worker_attributes(text) from public;
comment on function cbir.apply_worker_attributes(text) is
  'let every LOGIN member of cbir_worker (or role_name) bypass row-level security, so ingest may COPY vectors';

-- Needs a superuser (temp_file_limit, pg_catalog functions, predefined roles); an external server
-- migrated by a less privileged owner keeps going with a notice.
do $$
begin
  perform cbir.apply_reader_limits();
  perform cbir.apply_worker_attributes();
  grant pg_use_reserved_connections to cbir_worker;
  -- large objects: no one but the owner creates, writes, reads or removes them
  revoke execute on function
    pg_catalog.lo_from_bytea(oid, bytea), pg_catalog.lo_create(oid), pg_catalog.lo_creat(integer),
    pg_catalog.lo_put(oid, bigint, bytea), pg_catalog.lowrite(integer, bytea), pg_catalog.lo_open(oid, integer),
    pg_catalog.loread(integer, integer), pg_catalog.lo_get(oid), pg_catalog.lo_get(oid, bigint, integer),
    pg_catalog.lo_truncate(integer, integer), pg_catalog.lo_truncate64(integer, bigint),
    pg_catalog.lo_unlink(oid), pg_catalog.lo_import(text), pg_catalog.lo_import(text, oid),
    pg_catalog.lo_export(oid, text)
  from public;
exception when insufficient_privilege then
  raise notice 'cbir-pg: reader limits, worker attributes and large-object revokes need a superuser; skipped (%)', sqlerrm;
end
$$;

-- cbir_web: the login role `cbir-pg serve` connects as (least privilege; docs/serve.md).
--   It runs the search functions and reads image metadata, labels, encoders and the cbir_report views
--   (the reader grants of 92_access.sql). It can read neither cbir.patient.patient_key / extra, nor
--   cbir.image.uri / source_labels / extra, nor cbir.dataset.root: a response can only ever hold what
--   these grants let it read.
--   `cbir-pg serve` gives it LOGIN and a generated password, and grants SELECT on each embedding table.
select cbir.ensure_group_role('cbir_web');
-- cbir_analyst: the role the façade's `db.sql()` runs as (its grants: 92_analyst.sql). Made here, before
-- 92_access.sql, so that every embedding table's policies (cbir.protect_embedding_table) include its own.
select cbir.ensure_group_role('cbir_analyst');
-- cbir_web reads what a reader reads (it is a member of cbir_reader, and its policies in 92_access.sql let
-- it see every dataset): the page's grants are the reader's grants, so a logged-in person under
-- `set local role` sees in the page exactly what psql shows them.
grant cbir_reader to cbir_web;

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
