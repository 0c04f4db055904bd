-- Queries of dataset import (cbir_pg/datasets/) and of `cbir-pg datasets list` / `labels list`.

-- name: unlock_dataset
-- the lock (cbir_pg.db.locks, key dataset_key) serialises imports of the same dataset; imports of
-- different datasets run side by side
select pg_advisory_unlock(hashtextextended('cbir.import:' || %(key)s, 0));

-- name: now
select now();

-- name: patient_salt
select value from cbir.installation where key = 'patient_salt';

-- name: get_dataset
select id, kind from cbir.dataset where key = %(key)s;

-- name: insert_dataset
insert into cbir.dataset (key, kind, name, source, licence, citation, root, params, import_status)
values (%(key)s, %(kind)s, %(name)s, %(source)s, %(licence)s, %(citation)s, %(root)s, %(params)s, 'importing')
on conflict (key) do nothing
returning id;

-- name: update_dataset
-- an import run starts: the dataset is unfinished (kept out of evaluation) until finish_dataset
update cbir.dataset
set root = %(root)s, params = %(params)s, import_status = 'importing', imported_at = null
where id = %(dataset_id)s;

-- name: update_dataset_params
update cbir.dataset set params = params || %(params)s::jsonb where id = %(dataset_id)s;

-- name: finish_dataset
update cbir.dataset set imported_at = now(), import_status = 'complete' where id = %(dataset_id)s;

-- name: clear_import_errors
delete from cbir.error where stage = 'import' and dataset_id = %(dataset_id)s;

-- name: insert_error
insert into cbir.error (stage, dataset_id, source, reason, message)
values ('import', %(dataset_id)s, %(source)s, %(reason)s, %(message)s);

-- name: ensure_label
insert into cbir.label (key, modality, region, finding, kind)
values (%(key)s, %(modality)s, %(region)s, %(finding)s, %(kind)s)
on conflict (key) do nothing;

-- name: label_id
select id from cbir.label where key = %(key)s;

-- name: override_label_kind
update cbir.label set kind = %(kind)s, kind_overridden = true where key = %(key)s;

-- name: label_map_rows
select m.source_label, l.key
from cbir.label_map m left join cbir.label l on l.id = m.label_id
where m.dataset_id = %(dataset_id)s;

-- name: insert_label_map
insert into cbir.label_map (dataset_id, source_label, label_id)
values (%(dataset_id)s, %(source_label)s, %(label_id)s)
on conflict (dataset_id, source_label) do nothing;

-- name: upsert_label_map
insert into cbir.label_map (dataset_id, source_label, label_id)
values (%(dataset_id)s, %(source_label)s, %(label_id)s)
on conflict (dataset_id, source_label) do update set label_id = excluded.label_id;

-- name: existing_uris
-- uris of a batch already in the dataset, and whether this run inserted them (a repeated path)
select uri, created_at >= %(since)s as this_run
from cbir.image where dataset_id = %(dataset_id)s and uri = any(%(uris)s);

-- name: dataset_uris
-- every uri of the dataset (adapters that read a slow source skip these before fetching)
select uri from cbir.image where dataset_id = %(dataset_id)s;

-- name: create_stage
-- One batch of rows for cbir.image (their columns, with the table's own types), the patient and study keys
-- they are resolved from, and every label of the image (cbir.image_label); emptied at each commit.
create temp table if not exists import_stage on commit delete rows as
select 0 as ord, i.uri, null::text as patient_key, null::text as sex, null::real as age,
       null::text as study_key, i.content_hash, i.phash, i.size_bytes, i.width, i.height, i.modality,
       i.body_region, i.view, i.split, i.label_id, null::int[] as label_ids, i.source_labels, i.excluded,
       i.exclusion_reason, i.extra
from cbir.image i
with no data;

-- name: copy_stage
copy import_stage (ord, uri, patient_key, sex, age, study_key, content_hash, phash, size_bytes, width,
                   height, modality, body_region, view, split, label_id, label_ids, source_labels,
                   excluded, exclusion_reason, extra) from stdin;

-- name: stage_patients
insert into cbir.patient (dataset_id, patient_key, sex, age)
select distinct on (patient_key) %(dataset_id)s, patient_key, sex, age
from import_stage where patient_key is not null
order by patient_key, ord
on conflict (dataset_id, patient_key) do nothing;

-- name: stage_studies
insert into cbir.study (dataset_id, patient_id, study_key)
select distinct on (s.study_key) %(dataset_id)s, p.id, s.study_key
from import_stage s
left join cbir.patient p on p.dataset_id = %(dataset_id)s and p.patient_key = s.patient_key
where s.study_key is not null
order by s.study_key, s.ord
on conflict (dataset_id, study_key) do nothing;

-- name: stage_images
insert into cbir.image (dataset_id, patient_id, study_id, uri, content_hash, phash, size_bytes, width, height,
                        modality, body_region, view, split, label_id, source_labels, excluded,
                        exclusion_reason, extra)
select %(dataset_id)s, p.id, st.id, s.uri, s.content_hash, s.phash, s.size_bytes, s.width, s.height,
       s.modality, s.body_region, s.view, s.split, s.label_id, s.source_labels, s.excluded,
       s.exclusion_reason, s.extra
from import_stage s
left join cbir.patient p on p.dataset_id = %(dataset_id)s and p.patient_key = s.patient_key
left join cbir.study st on st.dataset_id = %(dataset_id)s and st.study_key = s.study_key
order by s.ord
on conflict (dataset_id, uri) do nothing
returning id;

-- name: stage_image_labels
insert into cbir.image_label (image_id, label_id)
select i.id, l.label_id
from import_stage s
join cbir.image i on i.dataset_id = %(dataset_id)s and i.uri = s.uri
cross join lateral unnest(s.label_ids) as l(label_id)
where i.id = any(%(ids)s)
on conflict do nothing;

-- name: reset_duplicates
update cbir.image set excluded = false, exclusion_reason = null, duplicate_of = null
where dataset_id = %(dataset_id)s and exclusion_reason in ('duplicate', 'near_duplicate');

-- name: mark_exact_duplicates
-- per pixel hash, keep the image of the held-out split first (test, val, train), then the smallest uri
with ranked as (
  select id,
         first_value(id) over w as keep_id,
         row_number() over w as rn
  from cbir.image
  where dataset_id = %(dataset_id)s and not excluded and content_hash is not null
  window w as (partition by content_hash
               order by case split when 'test' then 0 when 'val' then 1 when 'train' then 2 else 3 end, uri)
)
update cbir.image i
set excluded = true, exclusion_reason = 'duplicate', duplicate_of = r.keep_id
from ranked r where i.id = r.id and r.rn > 1;

-- name: near_candidates
-- images that take part in near-duplicate detection (cbir_pg.datasets.dedupe), in a fixed order
select id, uri, coalesce(split, '') as split, phash
from cbir.image
where dataset_id = %(dataset_id)s and not excluded and phash is not null
order by id

-- name: mark_near_duplicates
-- flag the images cbir_pg.datasets.dedupe chose (Hamming distance within the threshold)
update cbir.image i
set excluded = true, exclusion_reason = 'near_duplicate', duplicate_of = x.keep_id
from unnest(%(ids)s::bigint[], %(keep_ids)s::bigint[]) x(id, keep_id)
where i.id = x.id

-- name: cross_split_candidates
-- non-excluded images with a pHash and a split, of some datasets (all when null), for cross-split pairs
select i.id, i.uri, i.split, i.phash, d.key as dataset
from cbir.image i join cbir.dataset d on d.id = i.dataset_id
where (%(datasets)s::text[] is null or d.key = any(%(datasets)s::text[]))
  and (%(all)s or not i.excluded) and i.phash is not null and i.split is not null
order by d.key, i.id

-- name: patients_crossing_splits
select count(*) from (
  select patient_id from cbir.image
  where dataset_id = %(dataset_id)s and patient_id is not null and split is not null
  group by patient_id having count(distinct split) > 1
) x;

-- name: dataset_counts
select
  (select count(*) from cbir.image where dataset_id = %(dataset_id)s) as images,
  (select count(*) from cbir.patient where dataset_id = %(dataset_id)s) as patients,
  (select count(*) from cbir.error where dataset_id = %(dataset_id)s and stage = 'import') as errors;

-- name: list_datasets
select d.id, d.key, d.kind, d.name, d.root, d.imported_at,
       count(i.id) as images,
       count(i.id) filter (where i.excluded) as excluded,
       (select count(*) from cbir.patient p where p.dataset_id = d.id) as patients,
       (select count(*) from cbir.error e where e.dataset_id = d.id and e.stage = 'import') as errors,
       d.import_status
from cbir.dataset d left join cbir.image i on i.dataset_id = d.id
group by d.id order by d.key;

-- name: dataset_split_counts
select dataset_id, coalesce(split, 'none') as split, count(*) as images,
       count(*) filter (where not excluded) as included
from cbir.image group by dataset_id, split order by dataset_id, split;

-- name: dataset_label_counts
select i.dataset_id, coalesce(l.key, '(none)') as label, count(*) as images,
       count(*) filter (where not i.excluded) as included
from cbir.image i left join cbir.label l on l.id = i.label_id
group by i.dataset_id, l.key order by i.dataset_id, l.key;

-- name: dataset_exclusion_counts
select dataset_id, exclusion_reason, count(*) as images
from cbir.image where excluded group by dataset_id, exclusion_reason order by dataset_id, exclusion_reason;

-- name: list_labels
-- images: every image carrying the label (image_label); benchmark: single-label, not excluded
select l.id, l.key, l.modality, l.region, l.finding, l.kind, l.kind_overridden,
       (select count(*) from cbir.image_label il where il.label_id = l.id) as images,
       (select count(*) from cbir.image i where i.label_id = l.id and not i.excluded) as benchmark,
       coalesce((select array_agg(distinct d.key order by d.key)
                 from cbir.image_label il join cbir.image i on i.id = il.image_id
                 join cbir.dataset d on d.id = i.dataset_id
                 where il.label_id = l.id), '{}') as datasets
from cbir.label l order by l.key;

-- name: dataset_keys
-- every dataset key, for the error that lists the valid ones
select key from cbir.dataset order by key

-- name: mark_no_local_pixels
-- a --metadata-only import: the images this run inserted have no file on this machine
update cbir.image set local_pixels = false
where dataset_id = %(dataset_id)s and created_at >= %(since)s and local_pixels
