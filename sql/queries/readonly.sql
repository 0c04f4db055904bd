-- Queries cbir_pg.db.readonly runs on the owner's connection to prepare the façade's read-only login.

-- name: privileged
-- a session that could reach the server's files or programs, or other roles: user SQL must not run as it
select r.rolsuper or r.rolcreaterole or r.rolbypassrls
       or pg_has_role(r.oid, 'pg_execute_server_program', 'MEMBER')
       or pg_has_role(r.oid, 'pg_write_server_files', 'MEMBER')
       or pg_has_role(r.oid, 'pg_read_server_files', 'MEMBER') as privileged
from pg_roles r where r.rolname = current_user

-- name: analyst_exists
select exists (select from pg_roles where rolname = 'cbir_analyst') and to_regclass('cbir.image') is not null as ok

-- name: set_password
alter role {role} with login password {password}

-- name: grant_read
grant select on all tables in schema cbir, cbir_report to {role}
