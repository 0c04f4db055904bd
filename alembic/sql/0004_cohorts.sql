-- Revision 0004 (alembic/versions/0004_cohorts.py): saved cohorts. A cohort is a filter (the jsonb
-- cbir.similar_images_v2 takes, validated by cbir.resolve_cohort) and/or an explicit list of image ids,
-- saved under a name that searches (`{"cohort": "name"}`), SQL joins and BI tools use.
create table cbir.cohort (
  id          serial primary key,
  name        text not null unique check (name ~ '^[A-Za-z0-9][A-Za-z0-9 ._-]{0,62}$'),
  filter      jsonb not null default '{}' check (jsonb_typeof(filter) = 'object'),
  image_ids   bigint[],
  description text,
  created_by  text not null default current_user,
  created_at  timestamptz not null default now()
);
comment on table cbir.cohort is
  'saved cohorts: a filter (jsonb, cbir.resolve_cohort keys) and/or image ids; save with cbir.save_cohort';
comment on column cbir.cohort.image_ids is 'null: no id restriction (the filter alone); else only these images';
