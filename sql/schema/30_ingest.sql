-- Ingest status and the grants the ingest worker needs (re-applied by `cbir-pg db migrate`).

-- Counts per encoder and dataset over the dynamic embedding tables (one per encoder, cbir.encoder.table_name).
--   total:   images not excluded
--   done:    images with a stored vector
--   failed:  images without a vector that have a recorded ingest failure (cbir.ingest_failure)
--   pending: the rest (total - done - failed)
--   oldest_pending: when the oldest pending image was imported (cbir.ingest_lag_v1, 95_pacs.sql)
-- The one definition of these counts: cbir.ingest_status_v1 and cbir.ingest_lag_v1 read them from here.
create or replace function cbir.ingest_counts()
returns table (encoder text, dataset text, total bigint, done bigint, pending bigint, failed bigint,
               oldest_pending timestamptz)
language plpgsql
stable
set search_path = pg_catalog, cbir
as $fn$
declare
  r record;
begin
  for r in select m.key, m.table_name from cbir.embedded_models() m loop
    return query execute format(
      $q$
      select %L::text, d.key::text,
             count(*)::bigint,
             count(emb.image_id)::bigint,
             (count(*) - count(emb.image_id) - count(f.image_id) filter (where emb.image_id is null))::bigint,
             (count(f.image_id) filter (where emb.image_id is null))::bigint,
             min(i.created_at) filter (where emb.image_id is null and f.image_id is null)
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

create or replace function cbir.ingest_status_v1()
returns table (encoder text, dataset text, total bigint, done bigint, pending bigint, failed bigint)
language sql
stable
set search_path = pg_catalog, cbir
as $fn$
  select c.encoder, c.dataset, c.total, c.done, c.pending, c.failed from cbir.ingest_counts() c
$fn$;

create or replace view cbir.ingest_status as
select encoder, dataset, total, done, pending, failed from cbir.ingest_status_v1();
comment on view cbir.ingest_status is 'exact done / pending / failed image counts per encoder and dataset (cbir-pg ingest status)';

-- The worker claims images with SELECT ... FOR NO KEY UPDATE SKIP LOCKED, which PostgreSQL allows only
-- with UPDATE privilege on at least one column of cbir.image. Grant it on one bookkeeping column only.
grant update (created_at) on cbir.image to cbir_worker;
grant select on cbir.ingest_status to cbir_worker;
grant execute on function cbir.ingest_counts(), cbir.ingest_status_v1() to cbir_worker;

-- Failed ingest attempts are recorded only through this function: the caller gives the encoder, the
-- image and the error; the function sets the attempt count itself (one more per transaction, never a
-- caller's number), so a worker cannot mark chosen images as failed max_attempts times to keep them from
-- ever being embedded. SECURITY DEFINER: cbir_worker has no INSERT or UPDATE on cbir.ingest_failure.
create or replace function cbir.record_ingest_failure_v1(p_encoder text, p_image_id bigint, p_error text)
returns int
language plpgsql
security definer
set search_path = pg_catalog, cbir
as $fn$
declare
  n int;
begin
  if p_encoder is null or p_image_id is null or coalesce(p_error, '') = '' then
    raise exception 'record_ingest_failure_v1: encoder, image and error are required'
      using errcode = 'invalid_parameter_value';
  end if;
  insert into cbir.ingest_failure as f (encoder_key, image_id, attempts, last_error, last_xact)
  values (p_encoder, p_image_id, 1, left(p_error, 2000), pg_current_xact_id())
  on conflict (encoder_key, image_id) do update
  set attempts = f.attempts + case when f.last_xact = pg_current_xact_id() then 0 else 1 end,
      last_error = excluded.last_error, last_xact = excluded.last_xact, updated_at = now()
  returning f.attempts into n;
  return n;
end
$fn$;
revoke all on function cbir.record_ingest_failure_v1(text, bigint, text) from public;
grant execute on function cbir.record_ingest_failure_v1(text, bigint, text) to cbir_worker;
