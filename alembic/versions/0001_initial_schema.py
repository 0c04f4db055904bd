"""Initial schema: datasets, patients, studies, images, harmonised labels, encoders, errors, evaluation.

Per-encoder embedding tables (``cbir.embedding_<key>``) are created at run time when an encoder is
first used (:func:`cbir_pg.db.identifiers.create_embedding_table`); this revision holds everything else.
Functions, views and grants live in ``sql/schema/`` and are re-applied after every migration.

Create Date: 2026-11-28
"""

from __future__ import annotations

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

UPGRADE = r"""
create extension if not exists vector;
create schema if not exists cbir;
create schema if not exists cbir_report;

do $$
begin
  if not exists (select from pg_roles where rolname = 'cbir_reader') then
    create role cbir_reader nologin;
  end if;
  if not exists (select from pg_roles where rolname = 'cbir_worker') then
    create role cbir_worker nologin;
  end if;
end
$$;

-- one row per installation setting; holds the salt for hashing patient identifiers
create table cbir.installation (
  key   text primary key,
  value text not null
);
insert into cbir.installation (key, value)
values ('patient_salt', replace(gen_random_uuid()::text, '-', '') || replace(gen_random_uuid()::text, '-', ''));

create table cbir.dataset (
  id          serial primary key,
  key         text not null unique check (key ~ '^[a-z][a-z0-9_]{0,39}$'),
  kind        text not null,
  name        text not null,
  source      text,
  licence     text,
  citation    text,
  root        text,
  params      jsonb not null default '{}',
  imported_at timestamptz,
  created_at  timestamptz not null default now()
);
comment on column cbir.dataset.root is 'folder that image.uri is relative to';
comment on column cbir.dataset.kind is 'the import adapter (radimagenet, nih14, medmnist, dicom, ...)';

create table cbir.patient (
  id          bigserial primary key,
  dataset_id  int not null references cbir.dataset(id) on delete cascade,
  patient_key text not null,
  sex         text check (sex in ('F', 'M', 'O')),
  age         real check (age >= 0 and age < 150),
  extra       jsonb not null default '{}',
  unique (dataset_id, patient_key)
);
comment on column cbir.patient.patient_key is 'source patient id; a salted hash where the source id identifies a person';

create table cbir.study (
  id         bigserial primary key,
  dataset_id int not null references cbir.dataset(id) on delete cascade,
  patient_id bigint references cbir.patient(id) on delete cascade,
  study_key  text not null,
  study_date date,
  extra      jsonb not null default '{}',
  unique (dataset_id, study_key)
);
create index study_patient_idx on cbir.study (patient_id);

create table cbir.label (
  id              serial primary key,
  key             text not null unique,
  modality        text not null,
  region          text not null,
  finding         text not null,
  kind            text not null check (kind in ('anatomical', 'pathological')),
  kind_overridden boolean not null default false,
  unique (modality, region, finding),
  check (key = modality || '/' || region || '/' || finding)
);
comment on table cbir.label is 'harmonised classes, key <MODALITY>/<region>/<finding>';

create table cbir.label_map (
  dataset_id   int not null references cbir.dataset(id) on delete cascade,
  source_label text not null,
  label_id     int references cbir.label(id),
  primary key (dataset_id, source_label)
);
comment on column cbir.label_map.label_id is 'null: the source label is dropped on purpose (e.g. Support Devices)';

create table cbir.image (
  id               bigserial primary key,
  dataset_id       int not null references cbir.dataset(id) on delete cascade,
  patient_id       bigint references cbir.patient(id) on delete set null,
  study_id         bigint references cbir.study(id) on delete set null,
  uri              text not null,
  content_hash     text,
  phash            text,
  size_bytes       bigint,
  width            int,
  height           int,
  modality         text,
  body_region      text,
  view             text,
  split            text check (split in ('train', 'val', 'test')),
  label_id         int references cbir.label(id),
  source_labels    jsonb not null default '{}',
  excluded         boolean not null default false,
  exclusion_reason text,
  duplicate_of     bigint references cbir.image(id) on delete set null,
  extra            jsonb not null default '{}',
  created_at       timestamptz not null default now(),
  unique (dataset_id, uri),
  check (not excluded or exclusion_reason is not null)
);
comment on column cbir.image.uri is 'path relative to dataset.root';
comment on column cbir.image.content_hash is 'sha256 of the decoded pixels (exact-duplicate key)';
comment on column cbir.image.phash is 'perceptual hash, hex (near-duplicate key)';
comment on column cbir.image.label_id is 'the single harmonised label used by the benchmark (null when none or several)';
comment on column cbir.image.exclusion_reason is 'multi_label | duplicate | near_duplicate | no_label | unreadable | ...';
create index image_dataset_split_idx on cbir.image (dataset_id, split) where not excluded;
create index image_label_id_idx on cbir.image (label_id);
create index image_patient_idx on cbir.image (patient_id);
create index image_content_hash_idx on cbir.image (content_hash);

create table cbir.image_label (
  image_id bigint not null references cbir.image(id) on delete cascade,
  label_id int not null references cbir.label(id),
  primary key (image_id, label_id)
);
create index image_label_label_idx on cbir.image_label (label_id);
comment on table cbir.image_label is 'every harmonised label of an image (multi-label images included)';

create table cbir.encoder (
  key         text primary key check (key ~ '^[a-z][a-z0-9_]{0,39}$'),
  family      text not null,
  dim         int not null check (dim > 0),
  vector_type text not null check (vector_type in ('vector', 'halfvec')),
  config      jsonb not null,
  config_hash text not null,
  table_name  text not null,
  created_at  timestamptz not null default now()
);

create table cbir.error (
  id          bigserial primary key,
  stage       text not null,
  dataset_id  int references cbir.dataset(id) on delete cascade,
  image_id    bigint references cbir.image(id) on delete cascade,
  encoder_key text,
  source      text,
  reason      text not null,
  message     text not null,
  created_at  timestamptz not null default now()
);
comment on table cbir.error is 'recorded errors per image and stage (import, decode, ingest, index, eval)';
create index error_stage_idx on cbir.error (stage, dataset_id);

create table cbir.ingest_failure (
  encoder_key text not null references cbir.encoder(key) on delete cascade,
  image_id    bigint not null references cbir.image(id) on delete cascade,
  attempts    int not null default 1,
  last_error  text not null,
  updated_at  timestamptz not null default now(),
  primary key (encoder_key, image_id)
);

create table cbir.eval_run (
  id           bigserial primary key,
  kind         text not null check (kind in ('retrieval', 'knn', 'linear', 'ablation')),
  encoder_key  text not null,
  mode         text,
  params       jsonb not null default '{}',
  index_params jsonb not null default '{}',
  n_queries    int,
  n_index      int,
  metrics      jsonb not null default '{}',
  timings      jsonb not null default '{}',
  code_version text,
  started_at   timestamptz not null default now(),
  finished_at  timestamptz
);
create index eval_run_kind_idx on cbir.eval_run (kind, encoder_key, finished_at);

create table cbir.eval_query (
  run_id           bigint not null references cbir.eval_run(id) on delete cascade,
  query_image_id   bigint not null references cbir.image(id) on delete cascade,
  label_id         int references cbir.label(id),
  class_index_size int not null,
  neighbours       bigint[] not null,
  relevant         boolean[] not null,
  similarities     real[],
  primary key (run_id, query_image_id)
);
comment on table cbir.eval_query is 'per-query top-N of a retrieval run, so any aggregate can be recomputed';

create table cbir.eval_metric (
  run_id     bigint not null references cbir.eval_run(id) on delete cascade,
  metric     text not null,
  at         int not null default 0,
  average    text not null default '',
  index_size int not null default 0,
  seed       int not null default 0,
  value      double precision not null,
  primary key (run_id, metric, at, average, index_size, seed)
);
comment on table cbir.eval_metric is 'long-format metrics: P@N micro/macro, F1, AUPRC, AUROC, recall, ablation points';

create table cbir.eval_class_metric (
  run_id           bigint not null references cbir.eval_run(id) on delete cascade,
  label_id         int not null references cbir.label(id),
  metric           text not null,
  at               int not null default 0,
  n_queries        int not null,
  class_index_size int not null,
  value            double precision not null,
  primary key (run_id, label_id, metric, at)
);
"""

DOWNGRADE = r"""
drop schema if exists cbir_report cascade;
drop schema if exists cbir cascade;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    # Roles are cluster-wide and may be used by other databases on the server: they stay.
    op.execute(DOWNGRADE)
