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
  and (%(cohort)s::jsonb is null or i.id in (select c.image_id from cbir.cohort_images(%(cohort)s::jsonb) c))

-- name: index_class_sizes
select coalesce(label_id, -1) as label_id, count(*) as n
from pg_temp.eval_index_set
group by 1

-- name: index_contains
select image_id from pg_temp.eval_index_set where image_id = any(%(ids)s::bigint[])

-- name: topn_batch
-- {e_vec}/{q_vec}: the vectors as the model's HNSW index covers them (e.embedding, or
-- (e.embedding::halfvec(d)) for a halfvec index on a vector column: eval.topn.search_expressions).
-- Top-N of a batch of query images against the index set, in one statement: each query's own stored
-- vector drives a LATERAL subquery ordered by the cosine distance operator (HNSW index scan in ann
-- mode, sequential scan and top-N sort in exact mode). Ties are ordered by image_id.
-- Relevance (same harmonised label as the query) is computed here.
-- The index orders %(fetch)s candidates; they are ranked by the full-precision distance of the stored
-- vectors (fetch = n, or 2n when a halfvec index covers a vector column: fp16 distances tie where the
-- stored vectors do not, so the N-th place is settled at full precision, as in exact mode).
select b.ord, nb.image_id, nb.label_id, nb.distance, coalesce(nb.label_id = qi.label_id, false) as relevant
from unnest(%(query_ids)s::bigint[]) with ordinality as b(image_id, ord)
join {table} q on q.image_id = b.image_id
join cbir.image qi on qi.id = b.image_id
cross join lateral (
  select c.image_id, c.label_id, c.distance
  from (
    select e.image_id, x.label_id, e.embedding <=> q.embedding as distance
    from {table} e
    join pg_temp.eval_index_set x on x.image_id = e.image_id
    where e.image_id <> q.image_id
    order by {e_vec} <=> {q_vec}, e.image_id
    limit %(fetch)s
  ) c
  order by c.distance, c.image_id
  limit %(n)s
) nb
order by b.ord, nb.distance, nb.image_id

-- name: query_images
-- Query images: the query splits of the chosen datasets, not excluded, labelled, with a vector.
select s.image_id as id, s.label_id
from cbir.scope_images(%(datasets)s::text[], %(splits)s::text[]) s
join {table} e on e.image_id = s.image_id
where s.label_id is not null
order by s.image_id

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

-- name: model_images
-- The non-excluded images of some splits (and datasets) with a vector for one model, and their label.
select s.image_id as id, coalesce(s.label_id, -1) as label_id
from cbir.scope_images(%(datasets)s::text[], %(splits)s::text[]) s
join {table} e on e.image_id = s.image_id

-- name: fused_batch
-- Fused top-N of a batch of query images (eval/fusion.py), through the SQL API of sql/schema/25_fusion.sql.
select b.ord, f.rank, f.image_id, f.score, coalesce(i.label_id = qi.label_id, false) as relevant
from unnest(%(query_ids)s::bigint[]) with ordinality as b(image_id, ord)
join cbir.image qi on qi.id = b.image_id
cross join lateral cbir.similar_images_fused_v2(
  b.image_id, %(models)s::text[], %(n)s, %(cohort)s, true,
  %(method)s, %(c)s, %(candidates)s, %(expand_m)s, %(alpha)s, %(search)s) f
join cbir.image i on i.id = f.image_id
order by b.ord, f.rank

-- name: expanded_batch
-- alpha-QE top-N of a batch of query images (one model).
select b.ord, f.rank, f.image_id, f.similarity as score, coalesce(i.label_id = qi.label_id, false) as relevant
from unnest(%(query_ids)s::bigint[]) with ordinality as b(image_id, ord)
join cbir.image qi on qi.id = b.image_id
cross join lateral cbir.similar_images_expanded_v2(
  b.image_id, %(model)s, %(n)s, %(cohort)s, true,
  %(expand_m)s, %(alpha)s, %(search)s) f
join cbir.image i on i.id = f.image_id
order by b.ord, f.rank

-- name: reranked_batch
-- k-reciprocal re-ranked top-N of a batch of query images (one model, optionally alpha-QE first).
select b.ord, f.rank, f.image_id, f.score, coalesce(i.label_id = qi.label_id, false) as relevant
from unnest(%(query_ids)s::bigint[]) with ordinality as b(image_id, ord)
join cbir.image qi on qi.id = b.image_id
cross join lateral cbir.similar_images_reranked_v2(
  b.image_id, %(model)s, %(n)s, %(cohort)s, true,
  %(k1)s, %(lambda)s, %(candidates)s, %(expand_m)s, %(alpha)s, %(search)s) f
join cbir.image i on i.id = f.image_id
order by b.ord, f.rank

-- name: zeroshot_classes
-- The harmonised classes of the labelled, non-excluded images of some splits (and datasets) with a vector.
select l.id, l.key, l.modality, l.region, l.finding, count(*) as n_images
from cbir.scope_images(%(datasets)s::text[], %(splits)s::text[]) s
join {table} e on e.image_id = s.image_id
join cbir.label l on l.id = s.label_id
group by l.id, l.key, l.modality, l.region, l.finding
order by l.key

-- name: zeroshot_retrieval
-- Text-to-image top-N: one text vector per class, through the SQL API (cbir.knn: the same filters
-- and exactly-N guarantee as cbir.similar_to_vector, with an explicit method).
select p.ord, k.rank, k.image_id, coalesce(i.label_id = p.label_id, false) as relevant
from unnest(%(label_ids)s::int[], %(vecs)s::vector[]) with ordinality as p(label_id, v, ord)
cross join lateral cbir.knn(p.v, %(model)s, %(n)s, %(split)s, %(dataset)s, null, null, null, %(method)s) k
join cbir.image i on i.id = k.image_id
order by p.ord, k.rank

-- name: zeroshot_classify
-- Zero-shot classification: each labelled image gets the class whose text vector is nearest (cosine).
select s.image_id as id, s.label_id,
       (select p.label_id from unnest(%(label_ids)s::int[], %(vecs)s::vector[]) as p(label_id, v)
        order by e.embedding::vector <=> p.v, p.label_id limit 1) as predicted
from cbir.scope_images(%(datasets)s::text[], %(splits)s::text[]) s
join {table} e on e.image_id = s.image_id
where s.label_id is not null
order by s.image_id

-- name: all_dataset_keys
select key from cbir.dataset

-- name: set_ef_search
-- hnsw.ef_search for the rest of the transaction (eval/fusion.py: one read-only transaction)
select set_config('hnsw.ef_search', %(value)s, true)

-- name: unfinished_datasets
-- Datasets in an evaluation's scope whose last import run has not finished (killed or still running).
select key from cbir.dataset
where import_status <> 'complete'
  and (%(datasets)s::text[] is null or key = any(%(datasets)s::text[]))
order by key

-- name: scope_datasets
-- the datasets a run covers (eval/scope.py: one scope per image set): of the named ones (all when null)
-- those with non-excluded images in the splits (all when null), sorted
select d.key
from cbir.dataset d
where (%(datasets)s::text[] is null or d.key = any(%(datasets)s::text[]))
  and exists (select 1 from cbir.image i
              where i.dataset_id = d.id and not i.excluded
                and (%(splits)s::text[] is null or i.split = any(%(splits)s::text[])))
order by d.key
