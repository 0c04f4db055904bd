-- Queries cbir_pg.index runs. {table}, {index} and the other {placeholders} are psycopg.sql objects
-- (cbir_pg.db.identifiers), never strings.

-- name: vector_space
select table_name, dim, column_type, opclass, ann_index, binary_index
from cbir.model_vector_space(%(model)s)

-- name: refresh_search_functions
-- rewrite the model's generated search function (cbir.knn__<model>) for its current indexes
select cbir.refresh_search_functions(%(model)s)

-- name: row_count
select count(*) from {table}

-- name: create_hnsw
create index {concurrently} {index} on {table} using hnsw ({expr} {opclass})
  with (m = {m}, ef_construction = {ef_construction})

-- name: drop_index
drop index {concurrently} if exists {index}

-- name: rename_index
alter index {index} rename to {new_name}

-- name: analyze
analyze {table}

-- name: set_maintenance_work_mem
select set_config('maintenance_work_mem', %(value)s, false)

-- name: set_parallel_workers
select set_config('max_parallel_maintenance_workers', %(value)s, false)

-- name: progress
select p.phase, p.blocks_done, p.blocks_total, p.tuples_done, p.tuples_total
from pg_stat_progress_create_index p
where p.pid = %(pid)s

-- name: encoders
select e.key, e.dim, e.table_name
from cbir.encoder e
where %(model)s::text is null or e.key = %(model)s
order by e.key

-- name: hnsw_indexes
-- every HNSW index on a model's embedding table, with its parameters and size
select c.relname as index_name,
       x.indisvalid as valid,
       pg_relation_size(c.oid) as size_bytes,
       pg_get_indexdef(c.oid) as definition,
       opc.opcname as opclass,
       c.reloptions as options
from pg_index x
join pg_class c on c.oid = x.indexrelid
join pg_am am on am.oid = c.relam and am.amname = 'hnsw'
left join pg_opclass opc on opc.oid = x.indclass[0]
where x.indrelid = to_regclass(%(table)s)
order by c.relname

-- name: table_progress
select p.pid, p.phase, p.blocks_done, p.blocks_total, p.tuples_done, p.tuples_total,
       i.relname as index_name
from pg_stat_progress_create_index p
left join pg_class i on i.oid = p.index_relid
where p.relid = to_regclass(%(table)s)

-- name: recall_sample
-- recall@k of the index path against exact search, over a deterministic sample of stored vectors
with q as (
  select e.image_id, e.embedding::vector as v
  from {table} e join cbir.image i on i.id = e.image_id
  where not i.excluded
  order by md5(e.image_id::text || %(seed)s::text)
  limit %(n)s
)
select q.image_id,
       array(select a.image_id from cbir.knn(q.v, %(model)s, %(k)s, p_exclude_image_id => q.image_id,
                                             p_method => %(method)s) a order by a.rank) as ann,
       array(select x.image_id from cbir.knn(q.v, %(model)s, %(k)s, p_exclude_image_id => q.image_id,
                                             p_method => 'exact') x order by x.rank) as exact
from q

-- name: encoder_delete
-- Forget an encoder: its recorded failures go with it (on delete cascade).
delete from cbir.encoder where key = %(key)s;
