-- The images of a scope (re-applied by `cbir-pg db migrate`): what evaluation (sql/queries/eval.sql,
-- eval/scope.py) and the ingest worker's counts (sql/queries/ingest.sql) mean by "the images of these
-- datasets and splits". The queries join it to a model's embedding table, whose name is only known at
-- run time (cbir_pg/db/identifiers.py).

-- The non-excluded images of some datasets and splits (null: all of them), with their harmonised label
-- (null: unlabelled). SECURITY INVOKER: the caller's grants and row-level security apply, as to any read
-- of cbir.image. No SET clause, so the planner inlines it into the query that calls it (one plan, as the
-- joins it replaced); every name in it is schema-qualified and its operators are pg_catalog's.
create or replace function cbir.scope_images(p_datasets text[], p_splits text[])
returns table (image_id bigint, label_id int)
language sql stable
as $$
  select i.id, i.label_id
  from cbir.image i
  join cbir.dataset d on d.id = i.dataset_id
  where not i.excluded
    and (p_datasets is null or d.key = any(p_datasets))
    and (p_splits is null or i.split = any(p_splits))
$$;
comment on function cbir.scope_images(text[], text[]) is
  'the non-excluded images of some datasets and splits (null: all), with their label';
