-- Queries of the ingest worker (ingest/). {table} is cbir.embedding_<key>, built by
-- cbir_pg.db.identifiers.embedding_table; never a string.

-- name: encoder_get
select config_hash, dim, table_name from cbir.encoder where key = %(key)s

-- name: encoder_insert
insert into cbir.encoder (key, family, dim, vector_type, config, config_hash, table_name)
values (%(key)s, %(family)s, %(dim)s, %(vector_type)s, %(config)s, %(config_hash)s, %(table_name)s)
on conflict (key) do nothing

-- name: table_comment
select obj_description(to_regclass(%(regclass)s), 'pg_class') as comment

-- name: comment_table
comment on table {table} is {comment}

-- name: unknown_datasets
select k from unnest(%(datasets)s::text[]) k where not exists (select 1 from cbir.dataset d where d.key = k)

-- name: claim
-- Images without a vector for this encoder, below the retry limit, locked so no other worker takes them.
-- Keyset: only ids above %(after)s (the highest this process claimed), so a claim does not walk past
-- and lock-check the rows of this process's own batches still in flight. The scope (not excluded, datasets,
-- splits) is cbir.scope_images's, written out on cbir.image here because the claim locks those rows.
select i.id, coalesce(d.root, '') as root, i.uri, i.content_hash
from cbir.image i
join cbir.dataset d on d.id = i.dataset_id
where not i.excluded
  and (%(datasets)s::text[] is null or d.key = any(%(datasets)s::text[]))
  and (%(splits)s::text[] is null or i.split = any(%(splits)s::text[]))
  and not exists (select 1 from {table} e where e.image_id = i.id)
  and not exists (
    select 1 from cbir.ingest_failure f
    where f.encoder_key = %(encoder)s and f.image_id = i.id and f.attempts >= %(max_attempts)s)
  and i.id > %(after)s
order by i.id
limit %(batch)s
for no key update of i skip locked

-- name: already_done
select image_id from {table} where image_id = any(%(ids)s::bigint[])

-- name: count_todo
-- The images claim would still take (all of them, not a batch). With %(max_attempts)s null: every image
-- of the scope (cbir.scope_images: datasets, splits, not excluded) without a vector, failed or not
-- (eval/scope.py: whether a run's scope is completely embedded).
select count(*)
from cbir.scope_images(%(datasets)s::text[], %(splits)s::text[]) s
where not exists (select 1 from {table} e where e.image_id = s.image_id)
  and (%(max_attempts)s::int is null or not exists (
    select 1 from cbir.ingest_failure f
    where f.encoder_key = %(encoder)s and f.image_id = s.image_id and f.attempts >= %(max_attempts)s))

-- name: count_done
select count(*)
from {table} e
join cbir.image i on i.id = e.image_id
join cbir.dataset d on d.id = i.dataset_id
where (%(datasets)s::text[] is null or d.key = any(%(datasets)s::text[]))
  and (%(splits)s::text[] is null or i.split = any(%(splits)s::text[]))

-- name: copy_vectors
copy {table} (image_id, embedding) from stdin (format binary)

-- name: record_failure
-- the function sets the attempt count itself (the worker role cannot write cbir.ingest_failure)
select cbir.record_ingest_failure_v1(%(encoder)s, %(image_id)s, %(error)s)

-- name: record_error
insert into cbir.error (stage, dataset_id, image_id, encoder_key, source, reason, message)
select %(stage)s, i.dataset_id, i.id, %(encoder)s, %(source)s, %(reason)s, %(message)s
from cbir.image i where i.id = %(image_id)s

-- name: status
select encoder, dataset, total, done, pending, failed
from cbir.ingest_status
where %(encoder)s::text is null or encoder = %(encoder)s
order by encoder, dataset

-- name: h5_images_by_uri
-- images of the published-split imports (dkfz-splits) whose uri is one of the HDF5 keys
select i.id, i.uri
from cbir.image i
join cbir.dataset d on d.id = i.dataset_id
where d.kind = 'dkfz-splits'
  and (%(datasets)s::text[] is null or d.key = any(%(datasets)s::text[]))
  and i.uri = any(%(uris)s::text[])

-- name: h5_delete_vectors
delete from {table} where image_id = any(%(ids)s::bigint[])

-- name: h5_mark_imported
-- record the imported file (name, sha256, count) in the encoder's config, newest last
update cbir.encoder
set config = jsonb_set(config, '{imported_files}',
                       coalesce(config -> 'imported_files', '[]'::jsonb) || %(file)s::jsonb)
where key = %(key)s

-- name: h5_imported_files
select coalesce(config -> 'imported_files', '[]'::jsonb) from cbir.encoder where key = %(key)s
