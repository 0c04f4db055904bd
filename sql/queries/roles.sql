-- Queries cbir_pg.db.roles runs. {role} and {member_of} are psycopg.sql identifiers, never strings.

-- name: schema_ready
select to_regprocedure('cbir.apply_reader_limits(text)') is not null
   and exists (select from pg_roles where rolname = 'cbir_reader')
   and exists (select from pg_roles where rolname = 'cbir_worker') as ready

-- name: role_exists
select exists (select from pg_roles where rolname = %(name)s) as exists

-- name: create_login
create role {role} login password {verifier} in role {member_of}

-- name: apply_reader_limits
select cbir.apply_reader_limits(%(name)s) as n

-- name: apply_worker_attributes
-- a worker login bypasses row-level security, so ingest may COPY into the embedding tables
select cbir.apply_worker_attributes(%(name)s) as n

-- name: drop_owned
drop owned by {role}

-- name: drop_role
drop role {role}

-- name: list
select m.rolname as name,
       case when pg_has_role(m.oid, 'cbir_worker', 'MEMBER') then 'worker' else 'reader' end as kind,
       m.rolconnlimit as connection_limit
from pg_roles m
where m.rolcanlogin and not m.rolsuper
  and (pg_has_role(m.oid, 'cbir_reader', 'MEMBER') or pg_has_role(m.oid, 'cbir_worker', 'MEMBER'))
order by m.rolname

-- name: reader_limits
select setting, value from cbir.reader_limits_v1()

-- name: grant_login_to_web
-- `cbir-pg serve` acts as a reader with `set local role`: cbir_web needs the SET option on it
select cbir.grant_logins_to_web(%(name)s) as n

-- name: forget_grants
delete from cbir.dataset_grant where role_name = %(name)s

-- name: dataset_id
select d.id from cbir.dataset d where d.key = %(dataset)s

-- name: grant_dataset
insert into cbir.dataset_grant (dataset_id, role_name) values (%(dataset_id)s, %(name)s)
on conflict do nothing

-- name: revoke_dataset
delete from cbir.dataset_grant where dataset_id = %(dataset_id)s and role_name = %(name)s

-- name: dataset_grants
select d.key as dataset, g.role_name::text as role, g.granted_at
from cbir.dataset_grant g join cbir.dataset d on d.id = g.dataset_id
order by d.key, g.role_name
