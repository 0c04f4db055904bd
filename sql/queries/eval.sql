-- Queries the evaluation code runs (eval/topn.py, eval/retrieval.py, eval/store.py).
-- {table} is the model's embedding table, cbir.embedding_<key>, filled in by cbir_pg.db.identifiers.

-- name: encoder
select key, dim, vector_type, table_name, to_regclass('cbir.' || table_name) is not null as has_table
from cbir.encoder
where key = %(model)s

-- name: create_index_set
-- The index images of one evaluation, one temp table per worker connection (rows are inserted
-- under the run's exported snapshot, so every worker sees exactly the same index).
create temp table eval_index_set (
  image_id bigint primary key,
  label_id int
) on commit drop

-- name: fill_index_set
-- Every condition is optional (null = no restriction); they all apply together.
insert into pg_temp.eval_index_set (image_id, label_id)
select i.id, i.label_id
from cbir.image i
join {table} e on e.image_id = i.id
join cbir.dataset d on d.id = i.dataset_id
where (%(splits)s::text[] is null or i.split = any(%(splits)s::text[]))
  and (%(datasets)s::text[] is null or d.key = any(%(datasets)s::text[]))
  and (%(include_excluded)s or not i.excluded)
  and (%(ids)s::bigint[] is null or i.id in (select unnest(%(ids)s::bigint[])))

-- name: index_class_sizes
select coalesce(label_id, -1) as label_id, count(*) as n
from pg_temp.eval_index_set
group by 1

-- name: index_contains
select image_id from pg_temp.eval_index_set where image_id = any(%(ids)s::bigint[])

-- name: topn_batch
-- Top-N of a batch of query images against the index set, in one statement: each query's own stored
-- vector drives a LATERAL subquery ordered by the cosine distance operator (HNSW index scan in ann
-- mode, sequential scan and top-N sort in exact mode). Ties are ordered by image_id.
-- Relevance (same harmonised label as the query) is computed here.
select b.ord, nb.image_id, nb.label_id, nb.distance, coalesce(nb.label_id = qi.label_id, false) as relevant
from unnest(%(query_ids)s::bigint[]) with ordinality as b(image_id, ord)
join {table} q on q.image_id = b.image_id
join cbir.image qi on qi.id = b.image_id
cross join lateral (
  select e.image_id, x.label_id, e.embedding <=> q.embedding as distance
  from {table} e
  join pg_temp.eval_index_set x on x.image_id = e.image_id
  where e.image_id <> q.image_id
  order by e.embedding <=> q.embedding, e.image_id
  limit %(n)s
) nb
order by b.ord, nb.distance, nb.image_id

-- name: query_images
-- Query images: the query splits of the chosen datasets, not excluded, labelled, with a vector.
select i.id, i.label_id
from cbir.image i
join {table} e on e.image_id = i.id
join cbir.dataset d on d.id = i.dataset_id
where i.split = any(%(splits)s::text[])
  and (%(datasets)s::text[] is null or d.key = any(%(datasets)s::text[]))
  and not i.excluded
  and i.label_id is not null
order by i.id

-- name: dataset_keys
select key from cbir.dataset where key = any(%(datasets)s::text[])

-- name: embedding_indexes
-- Indexes of the embedding table on the vector column: access method, options (m, ef_construction).
select c.relname as name, am.amname as method, coalesce(c.reloptions, array[]::text[]) as options,
       pg_get_indexdef(c.oid) as definition
from pg_index ix
join pg_class c on c.oid = ix.indexrelid
join pg_am am on am.oid = c.relam
where ix.indrelid = to_regclass(%(table_name)s)
  and am.amname in ('hnsw', 'ivfflat')
order by c.relname

-- name: encoder_provenance
-- where the model's stored vectors come from: its config hash, weights source and imported files
select config_hash, config ->> 'weights_source' as weights_source,
       coalesce(config -> 'imported_files', '[]'::jsonb) as imported_files
from cbir.encoder where key = %(model)s

-- name: dataset_profiles
-- kind and import profile of the datasets in scope (all when %(datasets)s is null)
select key, kind, coalesce(params ->> 'profile', 'default') as profile
from cbir.dataset
where %(datasets)s::text[] is null or key = any(%(datasets)s::text[])
order by key

-- name: unfinished_datasets
-- Datasets in an evaluation's scope whose last import run has not finished (killed or still running).
select key from cbir.dataset
where import_status <> 'complete'
  and (%(datasets)s::text[] is null or key = any(%(datasets)s::text[]))
order by key

-- name: scope_without_vector
-- Images of an evaluation's scope (datasets, splits, not excluded) that have no vector of the model.
select count(*) as missing
from cbir.image i
join cbir.dataset d on d.id = i.dataset_id
where not i.excluded
  and (%(datasets)s::text[] is null or d.key = any(%(datasets)s::text[]))
  and (%(splits)s::text[] is null or i.split = any(%(splits)s::text[]))
  and not exists (select 1 from {table} e where e.image_id = i.id)
