-- Queries of the PACS service (cbir_pg/pacs/, ingest/follow.py).

-- name: source_cursor
-- the --since last cursor of a dataset imported over DICOMweb
select s.last_study_date, s.url
from cbir.dicom_source s join cbir.dataset d on d.id = s.dataset_id
where d.key = %(key)s;

-- name: finish_source
-- a complete DICOMweb import: the URL (no credentials) and the newest StudyDate imported so far
insert into cbir.dicom_source (dataset_id, url, copy_pixels, last_study_date, last_run_at)
select %(dataset_id)s, %(url)s, %(copy)s,
       (select max(to_date(i.extra -> 'dicom_uids' ->> 'date', 'YYYYMMDD'))
        from cbir.image i where i.dataset_id = %(dataset_id)s),
       now()
on conflict (dataset_id) do update
set url = excluded.url, copy_pixels = excluded.copy_pixels, last_study_date = excluded.last_study_date,
    last_run_at = excluded.last_run_at;

-- name: follower_register
insert into cbir.ingest_follower (host, pid, models, datasets)
values (%(host)s, %(pid)s, %(models)s, %(datasets)s)
returning id;

-- name: follower_beat
update cbir.ingest_follower
set heartbeat_at = now(),
    embedded = embedded + %(embedded)s,
    last_batch_at = case when %(embedded)s > 0 then now() else last_batch_at end
where id = %(id)s;

-- name: follower_stop
update cbir.ingest_follower set state = 'stopped', heartbeat_at = now() where id = %(id)s;

-- name: follower_status
select id, host, pid, model, state,
       extract(epoch from heartbeat_age)::float8 as heartbeat_age_s,
       embedded, pending,
       extract(epoch from lag)::float8 as lag_s
from cbir.ingest_followers
where state = 'running' or heartbeat_age < make_interval(secs => %(stale)s)
order by id, model;

-- name: attach_stage
-- labels attach: the CSV's (uid, label) rows for one transaction
create temp table attach_stage (uid text primary key, label_id int not null) on commit drop;

-- name: attach_delete
delete from cbir.image_label il
using cbir.image i, attach_stage s
where il.image_id = i.id and i.dataset_id = %(dataset_id)s
  and s.uid = i.extra -> 'dicom_uids' ->> %(level)s;

-- name: attach_insert
insert into cbir.image_label (image_id, label_id)
select i.id, s.label_id
from cbir.image i join attach_stage s on s.uid = i.extra -> 'dicom_uids' ->> %(level)s
where i.dataset_id = %(dataset_id)s
on conflict do nothing;

-- name: attach_update
with u as (
  update cbir.image i set label_id = s.label_id
  from attach_stage s
  where i.dataset_id = %(dataset_id)s and s.uid = i.extra -> 'dicom_uids' ->> %(level)s
  returning i.label_id
)
select l.key as label, count(*)::int as images from u join cbir.label l on l.id = u.label_id group by l.key;

-- name: attach_unmatched
select count(*)::int as n from attach_stage s
where not exists (
  select 1 from cbir.image i
  where i.dataset_id = %(dataset_id)s and i.extra -> 'dicom_uids' ->> %(level)s = s.uid);

-- name: dicom_refs
-- the DICOM UIDs and the server of the images that came from a PACS (viewer links)
select image_id, server, study, series, sop from cbir.dicom_ref_v1(%(ids)s::bigint[])
