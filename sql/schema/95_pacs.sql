-- The PACS service (docs/pacs.md): new-image notifications, follower heartbeats and lag
-- (re-applied by `cbir-pg db migrate`; the tables are in alembic revision 0007).

-- Fired once per statement that inserts into cbir.image (trigger image_notify_new, below): every
-- `cbir-pg ingest --follow` LISTENs on cbir_new_images and embeds what is new. The payload is empty; a
-- follower claims whatever is pending, so a notification lost while it was busy only delays until its poll.
create or replace function cbir.notify_new_images()
returns trigger
language plpgsql
set search_path = pg_catalog, cbir
as $fn$
begin
  perform pg_notify('cbir_new_images', '');
  return null;
end
$fn$;
create or replace trigger image_notify_new
  after insert on cbir.image
  for each statement execute function cbir.notify_new_images();

-- Per encoder: images still without a vector and without a recorded failure (the `pending` of
-- cbir.ingest_status, both from cbir.ingest_counts) and the time the oldest of them was imported.
-- lag = now() - oldest_pending: how far behind the followers are.
create or replace function cbir.ingest_lag_v1()
returns table (encoder text, pending bigint, oldest_pending timestamptz)
language sql
stable
set search_path = pg_catalog, cbir
as $fn$
  select m.key, coalesce(sum(c.pending), 0)::bigint, min(c.oldest_pending)
  from cbir.embedded_models() m
  left join cbir.ingest_counts() c on c.encoder = m.key
  group by m.key
  order by m.key
$fn$;

-- One row per follower and model: heartbeat age, what it embedded, and the model's lag.
create or replace view cbir.ingest_followers as
select f.id, f.host, f.pid, m.model, f.state, f.started_at, f.heartbeat_at,
       now() - f.heartbeat_at as heartbeat_age,
       f.last_batch_at, f.embedded,
       coalesce(l.pending, 0) as pending,
       case when l.oldest_pending is null then interval '0' else now() - l.oldest_pending end as lag
from cbir.ingest_follower f
cross join lateral unnest(f.models) as m(model)
left join cbir.ingest_lag_v1() l on l.encoder = m.model;
comment on view cbir.ingest_followers is
  'cbir-pg ingest --follow processes: heartbeat age, images embedded, pending images and lag per model';

grant select, insert, update on cbir.ingest_follower to cbir_worker;
grant usage on sequence cbir.ingest_follower_id_seq to cbir_worker;
grant select on cbir.ingest_followers to cbir_worker;
grant execute on function cbir.ingest_lag_v1() to cbir_worker;

-- The reference of images that came from a PACS (DICOMweb import or the C-STORE listener): their UIDs
-- and the DICOMweb server, for the "open in viewer" link (cbir_pg/pacs/viewer.py). SECURITY INVOKER: the
-- caller reads cbir.image.dicom_uids, the one column of the image row it needs, under the same
-- row-level security as every image read (a reader gets the references of its granted datasets only).
create or replace function cbir.dicom_ref_v1(p_image_ids bigint[])
returns table (image_id bigint, server text, study text, series text, sop text)
language sql
stable
security invoker
set search_path = pg_catalog, cbir
as $fn$
  select i.id, i.dicom_uids ->> 'server', i.dicom_uids ->> 'study', i.dicom_uids ->> 'series',
         i.dicom_uids ->> 'sop'
  from cbir.image i
  where i.id = any(p_image_ids) and i.dicom_uids is not null
$fn$;
comment on function cbir.dicom_ref_v1(bigint[]) is
  'DICOM UIDs and DICOMweb server of images imported from a PACS (viewer links), as the caller sees them';
grant select (dicom_uids) on cbir.image to cbir_reader, cbir_web;
grant execute on function cbir.dicom_ref_v1(bigint[]) to cbir_reader, cbir_web;
