-- Revision 0009 (alembic/versions/0009_explain_and_judgements.py): faithfulness of similarity maps
-- (cbir-pg eval explain) and radiologists' relevance judgements (the page's relevant / not relevant).

create table cbir.explain_faithfulness (
  id bigint generated always as identity primary key,
  model text not null,
  config_hash text not null,
  method text not null,
  params jsonb not null default '{}',
  n_pairs int not null check (n_pairs > 0),
  grid int not null,
  deletion_auc double precision not null,
  insertion_auc double precision not null,
  random_deletion_auc double precision not null,
  random_insertion_auc double precision not null,
  seconds_per_map double precision,
  device text,
  code_version text,
  created_at timestamptz not null default now()
);
comment on table cbir.explain_faithfulness is
  'deletion/insertion areas of one similarity-map method against a random cell order, over n_pairs pairs';
create index explain_faithfulness_model_method on cbir.explain_faithfulness (model, method, created_at desc);

-- Who may read a judgement's free-text reason besides its author: members of this role (and the owner).
do $$
begin
  if not exists (select from pg_roles where rolname = 'cbir_judgement_reader') then
    create role cbir_judgement_reader nologin;
  end if;
end
$$;

create table cbir.judgement (
  id bigint generated always as identity primary key,
  username text not null default current_user,
  query_image_id bigint references cbir.image (id) on delete cascade,
  query_hash text,
  neighbour_id bigint not null references cbir.image (id) on delete cascade,
  model text not null,
  verdict text not null check (verdict in ('relevant', 'not_relevant')),
  reason text check (reason is null or length(reason) <= 2000),
  created_at timestamptz not null default now(),
  check (query_image_id is not null or query_hash is not null),
  check (query_hash is null or query_hash ~ '^[0-9a-f]{64}$'),
  constraint judgement_one_verdict unique nulls not distinct (username, query_image_id, query_hash, neighbour_id, model)
);
comment on table cbir.judgement is
  'a user''s verdict on one neighbour of a query (stored image or upload pixel hash) shown by one model; '
  'one current verdict per (user, query, neighbour, model); rows are visible to their author only '
  '(row-level security), to members of cbir_judgement_reader and to the owner';
comment on column cbir.judgement.username is 'the database role that judged (current_user when written)';
comment on column cbir.judgement.query_hash is 'sha256 of the query''s decoded pixels (cbir_pg.images.pixel_hash) for an upload';
create index judgement_query on cbir.judgement (query_image_id, neighbour_id);
create index judgement_hash on cbir.judgement (query_hash) where query_hash is not null;

alter table cbir.judgement enable row level security;
create policy judgement_own on cbir.judgement
  using (username = current_user)
  with check (username = current_user);
create policy judgement_reader on cbir.judgement for select
  using (pg_catalog.pg_has_role(current_user, 'cbir_judgement_reader', 'MEMBER'));
