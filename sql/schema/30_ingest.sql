-- Ingest status and the grants the ingest worker needs (re-applied by `cbir-pg db migrate`).

-- Counts per encoder and dataset over the dynamic embedding tables (one per encoder, cbir.encoder.table_name).
--   total:   images not excluded
--   done:    images with a stored vector
--   failed:  images without a vector that have a recorded ingest failure (cbir.ingest_failure)
--   pending: the rest (total - done - failed)
create or replace function cbir.ingest_status_v1()
returns table (encoder text, dataset text, total bigint, done bigint, pending bigint, failed bigint)
language plpgsql
stable
set search_path = pg_catalog, cbir
as $fn$
declare
  r record;
begin
  for r in
    select e.key, e.table_name from cbir.encoder e
    where to_regclass(format('cbir.%I', e.table_name)) is not null
    order by e.key
  loop
    return query execute format(
      $q$
      select %L::text, d.key::text,
             count(*)::bigint,
             count(emb.image_id)::bigint,
             (count(*) - count(emb.image_id) - count(f.image_id) filter (where emb.image_id is null))::bigint,
             (count(f.image_id) filter (where emb.image_id is null))::bigint
      from cbir.image i
      join cbir.dataset d on d.id = i.dataset_id
      left join cbir.%I emb on emb.image_id = i.id
      left join cbir.ingest_failure f on f.image_id = i.id and f.encoder_key = %L
      where not i.excluded
      group by d.key
      $q$, r.key, r.table_name, r.key);
  end loop;
end
$fn$;

create or replace view cbir.ingest_status as
select encoder, dataset, total, done, pending, failed from cbir.ingest_status_v1();
comment on view cbir.ingest_status is 'exact done / pending / failed image counts per encoder and dataset (cbir-pg ingest status)';

-- The worker claims images with SELECT ... FOR NO KEY UPDATE SKIP LOCKED, which PostgreSQL allows only
-- with UPDATE privilege on at least one column of cbir.image. Grant it on one bookkeeping column only.
grant update (created_at) on cbir.image to cbir_worker;
grant select on cbir.ingest_status to cbir_worker;
grant execute on function cbir.ingest_status_v1() to cbir_worker;
