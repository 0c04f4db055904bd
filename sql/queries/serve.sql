-- Queries `cbir-pg serve` runs. Setup queries run on the owner's connection; every other query runs as
-- cbir_web and reads only the columns 90_roles.sql grants it (never a patient key, a uri or a root).

-- name: web_role_exists
-- a migrated database: the schema and the role 90_roles.sql makes
select exists (select from pg_roles where rolname = 'cbir_web') and to_regclass('cbir.image') is not null
   and to_regprocedure('cbir.grant_logins_to_web(text)') is not null as ok

-- name: set_web_password
alter role {role} with login password {password}

-- name: grant_embedding_read
grant select on {table} to {role}

-- name: models
-- the models with vectors, for the model picker; readable: whether this role may read the table (a model
-- whose table lacks the grant is left out and logged, never an error for every search)
select e.key as model, e.family, e.dim, e.table_name,
       has_table_privilege(format('%I.%I', 'cbir', e.table_name), 'select') as readable
from cbir.encoder e
where to_regclass(format('%I.%I', 'cbir', e.table_name)) is not null
order by e.key

-- name: model_count
-- the vectors of the images the caller may see (row-level security on cbir.image)
select count(*)::bigint as n from {table} e join cbir.image i on i.id = e.image_id

-- name: model_has_vectors
-- whether a model's table holds any vector (cheap at any size, unlike count(*))
select exists (select 1 from {table}) as ok

-- name: has_vector
select exists (select 1 from {table} e where e.image_id = %(image_id)s) as ok

-- name: image
select i.id as image_id, d.key as dataset, d.name as dataset_name, i.split, i.modality, i.body_region,
       i.view, l.key as label, l.kind as label_kind, i.width, i.height, i.excluded, i.exclusion_reason,
       i.duplicate_of, i.content_hash, p.sex, p.age
from cbir.image i
join cbir.dataset d on d.id = i.dataset_id
left join cbir.label l on l.id = i.label_id
left join cbir.patient p on p.id = i.patient_id
where i.id = %(image_id)s

-- name: image_labels
select l.key as label, l.kind
from cbir.image_label il join cbir.label l on l.id = il.label_id
where il.image_id = %(image_id)s
order by l.key

-- name: duplicates_of
-- the image's pixel duplicates, either way (the one it duplicates, those that duplicate it), with the label
-- and split a page compares with the image's own
select i.id as image_id, (i.id = q.duplicate_of) as original, l.key as label, i.split, d.key as dataset
from cbir.image q
join cbir.image i on i.id = q.duplicate_of or i.duplicate_of = q.id
join cbir.dataset d on d.id = i.dataset_id
left join cbir.label l on l.id = i.label_id
where q.id = %(image_id)s
order by (i.id = q.duplicate_of) desc, i.id
limit 21

-- name: image_file
select cbir.image_file(%(image_id)s) as path, i.content_hash, i.local_pixels
from cbir.image i where i.id = %(image_id)s

-- name: search_by_id
-- a search by a stored image in one statement, as the page shows it: whether the model has a table this
-- role may read (model_ok) and the query image is visible (image_ok), the query's label, and its
-- neighbours among the cohort (null columns when there are none); the search runs only when both hold
with m as (
  select 1 from cbir.encoder e
  where e.key = %(model)s and to_regclass(format('%%I.%%I', 'cbir', e.table_name)) is not null
    and has_table_privilege(format('%%I.%%I', 'cbir', e.table_name), 'select')
), q as (
  select l.key as label from cbir.image i left join cbir.label l on l.id = i.label_id where i.id = %(image_id)s
)
select exists (select 1 from m) as model_ok, exists (select 1 from q) as image_ok,
       (select q.label from q) as query_label, h.*
from (select 1) one
left join lateral (
  select s.rank, s.image_id, s.similarity, f.label, f.dataset, f.split, f.modality, f.sex, f.age
  from cbir.similar_images_v2(%(image_id)s, %(model)s, %(k)s, %(cohort)s) s
  cross join lateral cbir.image_facts(s.image_id) f
  where exists (select 1 from m) and exists (select 1 from q)
) h on true
order by h.rank

-- name: similar_to_vector
select s.rank, s.image_id, s.similarity, f.label, f.dataset, f.split, f.modality, f.sex, f.age
from cbir.similar_to_vector_v2(%(vec)s, %(model)s, %(k)s, %(cohort)s, %(query_image_id)s) s
cross join lateral cbir.image_facts(s.image_id) f
order by s.rank

-- name: filter_options
-- the values the search form offers (distinct over the non-excluded images)
select
  (select coalesce(jsonb_agg(x.key order by x.key), '[]') from (select distinct d.key from cbir.dataset d
     join cbir.image i on i.dataset_id = d.id where not i.excluded) x) as datasets,
  (select coalesce(jsonb_agg(x.modality order by x.modality), '[]') from (select distinct i.modality
     from cbir.image i where not i.excluded and i.modality is not null) x) as modalities,
  (select coalesce(jsonb_agg(x.key order by x.key), '[]') from (select distinct l.key from cbir.label l
     join cbir.image i on i.label_id = l.id where not i.excluded) x) as labels,
  (select coalesce(jsonb_agg(x.sex order by x.sex), '[]') from (select distinct p.sex from cbir.patient p
     join cbir.image i on i.patient_id = p.id where not i.excluded and p.sex is not null) x) as sexes,
  (select exists (select 1 from cbir.patient p join cbir.image i on i.patient_id = p.id
     where not i.excluded and p.age is not null)) as has_age

-- name: check_cohort
-- the one validation of a cohort (cbir.resolve_cohort): a bad value or an unknown name raises
select (cbir.resolve_cohort(%(cohort)s)).split is null as ok

-- name: find_by_content_hash
-- an upload whose decoded pixels equal a stored image's, with a vector for the model
select i.id as image_id
from cbir.image i
join {table} e on e.image_id = i.id
where i.content_hash = %(hash)s
order by i.excluded, i.id
limit 1

-- name: leaderboard
select model, mode, scope, run_id, n_queries, n_index, ef_search, p1_micro, p3_micro, p5_micro, p10_micro,
       p1_macro, p3_macro, p5_macro, p10_macro, finished_at
from cbir_report.leaderboard
order by scope, mode, p1_micro desc nulls last, model

-- name: class_precision
select model, mode, scope, class, kind, n_queries, class_index_size, p1, p10
from cbir_report.class_precision
where mode = 'ann' or not exists (select 1 from cbir_report.class_precision c2 where c2.mode = 'ann')
order by model, scope, class_index_size desc, class

-- name: ann_quality
select run_id, model, scope, ef_search, hnsw_m, hnsw_ef_construction, recall1, recall10, dp1_micro, dp10_micro,
       ann_queries_per_s, exact_queries_per_s
from cbir_report.ann_quality
order by finished_at desc
limit 20

-- name: set_role
-- a logged-in person's queries run as that person (reset by the rollback that ends each request)
set local role {role}

-- name: reader_oid
-- the role's oid if it may use the page: a login (not a superuser, not the server's own cbir_web) in
-- cbir_reader that cbir_web may `set role` to (cbir.grant_logins_to_web)
select r.oid::bigint as oid
from pg_roles r
where r.rolname = %(name)s and r.rolcanlogin and not r.rolsuper and r.rolname <> 'cbir_web'
  and pg_has_role(r.oid, 'cbir_reader', 'MEMBER')
  and pg_has_role('cbir_web', r.oid, 'SET')

-- name: login_identity
-- run on the connection opened as the person logging in
select (select r.oid from pg_roles r where r.rolname = current_user)::bigint as oid,
       pg_has_role(current_user, 'cbir_reader', 'MEMBER') as reader

-- name: grant_logins_to_web
select cbir.grant_logins_to_web() as n

-- name: image_visible
-- as the actor: row-level security decides
select i.id, i.content_hash, i.local_pixels from cbir.image i where i.id = %(image_id)s

-- name: image_path
-- as cbir_web, after image_visible found the image for the actor
select cbir.image_file(%(image_id)s) as path

-- name: audit_commit_mode
-- the audit row's commit: in the WAL buffer, visible to every reader at once, flushed to disk within
-- 3 x wal_writer_delay (docs/serve.md: what a crash of the database server can lose); a request does not
-- wait for a disk flush. CBIR_PG_AUDIT_SYNC=1 waits for it.
set local synchronous_commit to off

-- name: audit
insert into cbir.audit_log (actor, auth, address, method, path, action, status, image_ids, filters)
values (%(actor)s, %(auth)s, %(address)s, %(method)s, %(path)s, %(action)s, %(status)s, %(image_ids)s,
        %(filters)s)
