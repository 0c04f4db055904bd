-- Which datasets the caller may see (issue 22; the policies are in 92_access.sql). Here, before the
-- report views that use it.

-- The datasets the caller sees (as the caller: row-level security on cbir.dataset decides), for views
-- owned by the owner, which would otherwise see every row (cbir_report.neighbours, 45_bi.sql).
create or replace function cbir.visible_dataset_ids() returns setof int
language sql stable security invoker
set search_path = pg_catalog, pg_temp
as $$ select d.id from cbir.dataset d $$;
comment on function cbir.visible_dataset_ids() is
  'ids of the datasets the calling role may see (row-level security on cbir.dataset decides)';
grant execute on function cbir.visible_dataset_ids() to cbir_reader;
