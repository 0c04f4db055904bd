-- Revision 0005 (alembic/versions/0005_access_and_audit.py): who may see which dataset, and the audit
-- trail of `cbir-pg serve` (issue 22). The policies and grants that use these tables are re-applied by
-- `cbir-pg db migrate` from sql/schema/92_access.sql.

-- A dataset is visible to a role (and the roles that have its privileges) only when granted here:
-- `cbir-pg db roles grant-dataset ROLE DATASET`. Granting to cbir_reader shares it with every reader.
create table cbir.dataset_grant (
  dataset_id int not null references cbir.dataset(id) on delete cascade,
  role_name  name not null,
  granted_at timestamptz not null default now(),
  primary key (dataset_id, role_name)
);
comment on table cbir.dataset_grant is
  'datasets granted to roles: row-level security on cbir.image and friends shows a reader only these';
create index dataset_grant_role_idx on cbir.dataset_grant (role_name);

-- Every page view, search, upload and pixel or thumbnail fetch of `cbir-pg serve`, and every login.
-- Append-only: no role may update or delete a row (the trigger refuses it even for the owner, who
-- would have to drop the trigger first, itself a recorded DDL change); readers cannot read it.
create table cbir.audit_log (
  id        bigint generated always as identity primary key,
  at        timestamptz not null default clock_timestamp(),
  actor     text not null,
  auth      text not null check (auth in ('password', 'token', 'proxy', 'none')),
  address   inet,
  method    text not null,
  path      text not null,
  action    text not null,
  status    int,
  image_ids bigint[] not null default '{}',
  filters   jsonb not null default '{}'
);
comment on table cbir.audit_log is
  'append-only trail of cbir-pg serve: who (actor, how authenticated, from where), when, what (action, path, status), which image ids, which filters';
comment on column cbir.audit_log.actor is 'the database role acting (the one-time link: the server owner, shown as "owner")';
create index audit_log_at_idx on cbir.audit_log (at);
create index audit_log_actor_idx on cbir.audit_log (actor, at);

create function cbir.audit_log_append_only() returns trigger
language plpgsql
set search_path = pg_catalog
as $$
begin
  raise exception 'cbir.audit_log is append-only: % refused', tg_op using errcode = 'insufficient_privilege';
end
$$;
create trigger audit_log_append_only
  before update or delete on cbir.audit_log
  for each row execute function cbir.audit_log_append_only();
create trigger audit_log_no_truncate
  before truncate on cbir.audit_log
  for each statement execute function cbir.audit_log_append_only();

-- Row-level security: the policies live in sql/schema/92_access.sql. The owner bypasses them (it owns
-- the tables); the ingest worker and cbir_web see every row; a reader sees its granted datasets only.
alter table cbir.dataset enable row level security;
alter table cbir.image enable row level security;
alter table cbir.patient enable row level security;
alter table cbir.image_label enable row level security;
alter table cbir.dataset_grant enable row level security;
