-- Queries cbir_pg.search runs.

-- name: similar_images
-- neighbours of a stored image among a cohort (cbir_pg.cohort.Cohort as jsonb), with label, dataset and patient joined in
select s.rank, s.image_id, s.similarity, f.label, f.dataset, i.uri, f.split, f.modality, f.patient_id, f.sex, f.age
from cbir.similar_images_v2(%(image_id)s, %(model)s, %(k)s, %(cohort)s) s
cross join lateral cbir.image_facts(s.image_id) f
join cbir.image i on i.id = s.image_id  -- the file (a reader is not granted uri)
order by s.rank

-- name: similar_to_vector
select s.rank, s.image_id, s.similarity, f.label, f.dataset, i.uri, f.split, f.modality, f.patient_id, f.sex, f.age
from cbir.similar_to_vector_v2(%(vec)s, %(model)s, %(k)s, %(cohort)s) s
cross join lateral cbir.image_facts(s.image_id) f
join cbir.image i on i.id = s.image_id  -- the file (a reader is not granted uri)
order by s.rank

-- name: image_info
select i.id as image_id, l.key as label, d.key as dataset, i.uri, i.split, i.modality, i.patient_id,
       p.sex, p.age, d.root, i.local_pixels, i.content_hash
from cbir.image i
join cbir.dataset d on d.id = i.dataset_id
left join cbir.label l on l.id = i.label_id
left join cbir.patient p on p.id = i.patient_id
where i.id = %(image_id)s

-- name: find_by_uri
-- a file given by path, matched against dataset roots
select i.id
from cbir.image i
join cbir.dataset d on d.id = i.dataset_id
join {table} e on e.image_id = i.id
where d.root = %(root)s and i.uri = %(uri)s

-- name: dataset_roots
select d.root from cbir.dataset d where d.root is not null

-- name: find_by_content_hash
-- a file whose decoded pixels equal a stored image's (the hash import records), with a vector
select i.id
from cbir.image i
join {table} e on e.image_id = i.id
where i.content_hash = %(hash)s
order by i.excluded, i.id
limit 1

-- name: encoder_row
select e.key, e.dim, e.config, e.config_hash from cbir.encoder e where e.key = %(model)s

-- name: set_ef_search
select set_config('hnsw.ef_search', %(value)s, true)

-- name: check_cohort
-- validate a cohort (and resolve its names) without searching: the one validation, cbir.resolve_cohort
select (cbir.resolve_cohort(%(cohort)s, %(image_id)s)).split is null as ok
