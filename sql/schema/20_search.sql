-- Similar-case search: the SQL API (docs/sql-api.md has the signatures and runnable examples).
--
--   cbir.similar_images_v2(image_id, model, k, cohort jsonb, exclude_self)
--   cbir.similar_to_vector_v2(vec, model, k, cohort jsonb, query_image_id)
--   cbir.knn_v2(vec, model, k, filter cbir.cohort_filter, method, image_id)   the engine both call
--   cbir.resolve_cohort(cohort jsonb, query_image_id, exclude_query)         the one validation of a cohort
--   cbir.image_facts(image_id)   what a hit shows: label, dataset, split, modality, patient_id, sex, age
--   released signatures, thin wrappers over the _v2s (their filters made a cohort by cbir.legacy_*):
--   cbir.similar_images(image_id, model, k, split, dataset, modality, exclude_same_patient, exclude_self)
--   cbir.similar_to_vector(vec, model, k, split, dataset, modality, exclude_patient_id, exclude_image_id)
--   cbir.knn(vec, model, k, split, dataset, modality, exclude_patient_id, exclude_image_id, method)
--
-- A cohort ("similar cases among these images") is one jsonb object; every key is optional:
--   split, dataset, modality, label (a cbir.label key, the image's primary label), sex (F | M | O),
--   age_min, age_max (the patient's age, inclusive), patient ('same' | 'other': the query image's patient
--   only, or everyone else), patient_id, exclude_patient_id (cbir.patient ids), image_ids (an array of
--   cbir.image ids), cohort (the name of a saved cohort, cbir.cohort, whose filter and ids are added).
-- cbir.resolve_cohort validates it once (unknown keys, bad values, unknown names: one clear error,
-- invalid_parameter_value) and resolves names to ids, giving a cbir.cohort_filter the engine binds.
--
-- Guarantees:
--   * exactly k rows when k matching rows exist: hnsw.ef_search (default 40, which silently caps an HNSW
--     scan) is raised to at least k, filters run as pgvector 0.8 iterative index scans (strict_order),
--     and if an index scan still comes back short while more matching rows exist, the query is re-run
--     as an exact scan (an explicit image_ids list of at most 4,096 ids is searched exactly at once);
--   * a model's search runs in its own generated function cbir.knn__<model> (static SQL, planned once
--     per session, no catalog lookups per call), written by cbir.refresh_search_functions from the
--     model's table and indexes whenever they change (embedding table created or dropped, encoder
--     registered, index built or dropped by cbir-pg, every migrate); after creating an index by hand,
--     run `select cbir.refresh_search_functions()`. Filter values are bound, never spliced into SQL text;
--   * the GUCs changed for the scan are restored before the function returns.
-- A released signature is never changed in place: add a _v2 instead.
-- search_path: pgvector's types and operators live in the extension's schema (public); cbir objects are qualified.
-- The thin SQL functions (similar_images_v2, similar_to_vector_v2, the released wrappers and legacy_*) have
-- no SET clause, so the planner inlines them into the statement that calls them (planned once with it,
-- not on every call); every name in them is schema-qualified, and they call only cbir functions (each with
-- its own search_path) and pg_catalog's operators, which are always searched first.

-- the models whose embedding table exists (made when a model stores its first vectors), by key
create or replace function cbir.embedded_models()
returns table (key text, table_name text)
language sql stable
set search_path = pg_catalog, pg_temp
as $$
  select e.key, e.table_name from cbir.encoder e
  where to_regclass(format('cbir.%I', e.table_name)) is not null
  order by e.key
$$;
comment on function cbir.embedded_models() is 'the cbir.encoder rows whose embedding table exists, by key';

-- the model's embedding table and how its vectors are indexed and compared
create or replace function cbir.model_vector_space(
  p_model text,
  out table_name text,     -- relation name in schema cbir
  out dim int,
  out column_type text,    -- 'vector' | 'halfvec' (the stored column)
  out distance_expr text,  -- the expression an HNSW cosine index covers, over alias e
  out query_expr text,     -- the query vector ($1, type vector) cast to match distance_expr
  out opclass text,        -- HNSW operator class for distance_expr
  out ann_index text,      -- valid full-precision HNSW index name, or null
  out binary_index text    -- valid binary-quantised HNSW index name, or null
)
language plpgsql stable
set search_path = pg_catalog, public, pg_temp
as $$
declare
  v_rel regclass;
begin
  if p_model is null or p_model !~ '^[a-z][a-z0-9_]{0,39}$' then
    raise exception 'invalid model name %: use lowercase letters, digits and _', coalesce(to_jsonb(p_model)::text, 'null')
      using errcode = 'invalid_parameter_value';
  end if;
  select e.table_name, e.dim into table_name, dim from cbir.encoder e where e.key = p_model;
  if not found then
    raise exception 'unknown model %: no row in cbir.encoder', to_jsonb(p_model)::text
      using errcode = 'no_data_found';
  end if;
  v_rel := to_regclass(format('%I.%I', 'cbir', table_name));
  if v_rel is null then
    raise exception 'model % has no embedding table cbir.%', to_jsonb(p_model)::text, table_name
      using errcode = 'no_data_found';
  end if;
  select t.typname into column_type
  from pg_attribute a join pg_type t on t.oid = a.atttypid
  where a.attrelid = v_rel and a.attname = 'embedding' and not a.attisdropped;
  if column_type is null or column_type not in ('vector', 'halfvec') then
    raise exception 'cbir.% has no vector/halfvec column "embedding"', table_name
      using errcode = 'undefined_column';
  end if;
  if column_type = 'halfvec' then
    distance_expr := 'e.embedding';
    query_expr := '$1::halfvec';
    opclass := 'halfvec_cosine_ops';
  elsif dim > cbir.max_vector_index_dim() then
    -- HNSW indexes vector up to 2,000 dims; above that the index covers a halfvec expression
    distance_expr := format('(e.embedding::halfvec(%s))', dim);
    query_expr := format('$1::halfvec(%s)', dim);
    opclass := 'halfvec_cosine_ops';
  else
    distance_expr := 'e.embedding';
    query_expr := '$1';
    opclass := 'vector_cosine_ops';
  end if;
  select c.relname into ann_index
  from pg_index x join pg_class c on c.oid = x.indexrelid
  where x.indrelid = v_rel and x.indisvalid and c.relname = cbir.index_name(p_model, 'hnsw');
  -- a vector column indexed as halfvec (the default storage of `index build`, measured fastest at equal
  -- recall): search the expression the index covers
  if column_type = 'vector' and dim <= 2000 and exists (
    select 1 from pg_index x join pg_class c on c.oid = x.indexrelid join pg_opclass o on o.oid = x.indclass[0]
    where x.indrelid = v_rel and c.relname = cbir.index_name(p_model, 'hnsw')
      and o.opcname = 'halfvec_cosine_ops') then
    distance_expr := format('(e.embedding::halfvec(%s))', dim);
    query_expr := format('$1::halfvec(%s)', dim);
    opclass := 'halfvec_cosine_ops';
  end if;
  select c.relname into binary_index
  from pg_index x join pg_class c on c.oid = x.indexrelid
  where x.indrelid = v_rel and x.indisvalid and c.relname = cbir.index_name(p_model, 'hnsw_bq');
end
$$;

-- the resolved cohort the engine binds (names turned into ids); build it with cbir.resolve_cohort
do $$
begin
  if to_regtype('cbir.cohort_filter') is null then
    create type cbir.cohort_filter as (
      split text,
      dataset_id int,
      modality text,
      label_id int,
      sex text,
      age_min real,
      age_max real,
      patient_id bigint,
      exclude_patient_id bigint,
      image_ids bigint[],
      exclude_image_id bigint
    );
  end if;
end
$$;
comment on type cbir.cohort_filter is 'a validated cohort with names resolved to ids (cbir.resolve_cohort)';

-- the one validation of a cohort: jsonb in, cbir.cohort_filter out (see the header for the keys)
create or replace function cbir.resolve_cohort(
  p_cohort jsonb,
  p_query_image_id bigint default null,
  p_exclude_query boolean default false
)
returns cbir.cohort_filter
language plpgsql stable
set search_path = pg_catalog, public, pg_temp
as $$
declare
  f cbir.cohort_filter;
  c jsonb := coalesce(p_cohort, '{}');
  saved record;
  k text;
  v jsonb;
  v_patient bigint;
  allowed constant text[] := array['split', 'dataset', 'modality', 'label', 'sex', 'age_min', 'age_max',
                                   'patient', 'patient_id', 'exclude_patient_id', 'image_ids', 'cohort'];
begin
  if c = '{}'::jsonb then  -- no filter (the common search): only the query image may be left out
    if p_exclude_query then
      f.exclude_image_id := p_query_image_id;
    end if;
    return f;
  end if;
  if jsonb_typeof(c) <> 'object' then
    raise exception 'invalid cohort: give a JSON object, got %', left(c::text, 80)
      using errcode = 'invalid_parameter_value';
  end if;
  c := jsonb_strip_nulls(c);
  for k in select jsonb_object_keys(c) loop
    if not k = any(allowed) then
      raise exception 'invalid cohort: unknown key %; use %', to_jsonb(k)::text, array_to_string(allowed, ', ')
        using errcode = 'invalid_parameter_value';
    end if;
  end loop;
  if c ? 'cohort' then  -- a saved cohort: its filter and ids are added to the other keys
    if jsonb_typeof(c->'cohort') <> 'string' then
      raise exception 'invalid cohort: cohort must be a saved cohort''s name' using errcode = 'invalid_parameter_value';
    end if;
    select s.name, s.filter, s.image_ids into saved from cbir.cohort s where s.name = c->>'cohort';
    if not found then
      raise exception 'unknown cohort %: no row in cbir.cohort', to_jsonb(c->>'cohort')::text
        using errcode = 'invalid_parameter_value';
    end if;
    for k in select jsonb_object_keys(jsonb_strip_nulls(saved.filter)) loop
      if c ? k then
        raise exception 'invalid cohort: saved cohort % already sets %', to_jsonb(saved.name)::text, k
          using errcode = 'invalid_parameter_value';
      end if;
    end loop;
    c := (c - 'cohort') || jsonb_strip_nulls(saved.filter);
    if c ? 'cohort' then
      raise exception 'invalid cohort: saved cohort % refers to another cohort', to_jsonb(saved.name)::text
        using errcode = 'invalid_parameter_value';
    end if;
    f.image_ids := saved.image_ids;
  end if;
  foreach k in array array['split', 'dataset', 'modality', 'label', 'sex', 'patient'] loop
    if c ? k and jsonb_typeof(c->k) <> 'string' then
      raise exception 'invalid cohort: % must be a string, got %', k, left((c->k)::text, 40)
        using errcode = 'invalid_parameter_value';
    end if;
  end loop;
  foreach k in array array['age_min', 'age_max', 'patient_id', 'exclude_patient_id'] loop
    if c ? k and jsonb_typeof(c->k) <> 'number' then
      raise exception 'invalid cohort: % must be a number, got %', k, left((c->k)::text, 40)
        using errcode = 'invalid_parameter_value';
    end if;
  end loop;
  f.split := c->>'split';
  if f.split is not null and not f.split = any(cbir.splits()) then
    raise exception 'invalid split %: use train, val or test', to_jsonb(f.split)::text
      using errcode = 'invalid_parameter_value';
  end if;
  if c ? 'dataset' then
    if c->>'dataset' !~ '^[a-z][a-z0-9_]{0,39}$' then
      raise exception 'invalid dataset name %: use lowercase letters, digits and _', to_jsonb(c->>'dataset')::text
        using errcode = 'invalid_parameter_value';
    end if;
    select d.id into f.dataset_id from cbir.dataset d where d.key = c->>'dataset';
    if not found then
      raise exception 'unknown dataset %', to_jsonb(c->>'dataset')::text using errcode = 'invalid_parameter_value';
    end if;
  end if;
  f.modality := c->>'modality';
  if f.modality is not null and f.modality !~ '^[A-Za-z0-9][A-Za-z0-9 ._/+-]{0,31}$' then
    raise exception 'invalid modality %', to_jsonb(f.modality)::text using errcode = 'invalid_parameter_value';
  end if;
  if c ? 'label' then
    select l.id into f.label_id from cbir.label l where l.key = c->>'label';
    if not found then
      raise exception 'unknown label %: use a cbir.label key like XR/chest/pneumonia', to_jsonb(c->>'label')::text
        using errcode = 'invalid_parameter_value';
    end if;
  end if;
  f.sex := c->>'sex';
  if f.sex is not null and f.sex not in ('F', 'M', 'O') then
    raise exception 'invalid sex %: use F, M or O', to_jsonb(f.sex)::text using errcode = 'invalid_parameter_value';
  end if;
  foreach k in array array['age_min', 'age_max'] loop
    if c ? k and not (c->>k)::numeric between 0 and 150 then
      raise exception '% must be between 0 and 150, got %', replace(k, '_', ' '), c->>k
        using errcode = 'invalid_parameter_value';
    end if;
  end loop;
  f.age_min := (c->>'age_min')::real;
  f.age_max := (c->>'age_max')::real;
  if f.age_min > f.age_max then
    raise exception 'age range is empty: % > %', f.age_min, f.age_max using errcode = 'invalid_parameter_value';
  end if;
  foreach k in array array['patient_id', 'exclude_patient_id'] loop
    if c ? k and ((c->>k)::numeric <> trunc((c->>k)::numeric) or (c->>k)::numeric < 1) then
      raise exception 'invalid cohort: % must be a positive integer, got %', k, c->>k
        using errcode = 'invalid_parameter_value';
    end if;
  end loop;
  f.patient_id := (c->>'patient_id')::bigint;
  f.exclude_patient_id := (c->>'exclude_patient_id')::bigint;
  if c ? 'patient' then
    if c->>'patient' not in ('same', 'other') then
      raise exception 'invalid patient %: use same (the query''s patient only) or other (every other patient)',
        to_jsonb(c->>'patient')::text using errcode = 'invalid_parameter_value';
    end if;
    if p_query_image_id is null then
      raise exception 'a patient filter relative to the query (patient: %) needs a stored query image', c->>'patient'
        using errcode = 'invalid_parameter_value';
    end if;
    select i.patient_id into v_patient from cbir.image i where i.id = p_query_image_id;
    if c->>'patient' = 'same' then
      -- an image without a recorded patient has no "same patient": nothing matches
      f.patient_id := coalesce(v_patient, -1);
      if c ? 'patient_id' and (c->>'patient_id')::bigint is distinct from v_patient then
        f.patient_id := -1;
      end if;
    elsif v_patient is not null then
      if f.exclude_patient_id is not null and f.exclude_patient_id <> v_patient then
        raise exception 'invalid cohort: patient other and exclude_patient_id % name two patients', f.exclude_patient_id
          using errcode = 'invalid_parameter_value';
      end if;
      f.exclude_patient_id := v_patient;
    end if;
  end if;
  if c ? 'image_ids' then
    v := c->'image_ids';
    if jsonb_typeof(v) <> 'array' or jsonb_array_length(v) > 1000000
       or exists (select 1 from jsonb_array_elements(v) x
                  where jsonb_typeof(x) <> 'number' or x::text !~ '^[0-9]{1,18}$') then
      raise exception 'invalid cohort: image_ids must be an array of image ids (positive integers)'
        using errcode = 'invalid_parameter_value';
    end if;
    f.image_ids := case
      when f.image_ids is null then array(select distinct x::text::bigint from jsonb_array_elements(v) x order by 1)
      else array(select distinct x::text::bigint from jsonb_array_elements(v) x
                 where x::text::bigint = any(f.image_ids) order by 1) end;
  end if;
  if p_exclude_query then
    f.exclude_image_id := p_query_image_id;
  end if;
  return f;
end
$$;
comment on function cbir.resolve_cohort(jsonb, bigint, boolean) is
  'validate a cohort (jsonb) and resolve its names to ids; patient same|other is relative to p_query_image_id';

-- the one SQL form of a cohort, over cbir.image i and a row e with e.image_id; %1$s stands for the
-- cbir.cohort_filter (a variable, or ($1) in dynamic SQL). The patient table is only read when a sex or
-- age filter is given.
create or replace function cbir.cohort_predicate()
returns text
language sql immutable
set search_path = pg_catalog, pg_temp
as $p$
  select $w$not i.excluded
      and (%1$s.split is null or i.split = %1$s.split)
      and (%1$s.dataset_id is null or i.dataset_id = %1$s.dataset_id)
      and (%1$s.modality is null or i.modality = %1$s.modality)
      and (%1$s.label_id is null or i.label_id = %1$s.label_id)
      and (%1$s.patient_id is null or i.patient_id = %1$s.patient_id)
      and (%1$s.exclude_patient_id is null or i.patient_id is distinct from %1$s.exclude_patient_id)
      and (%1$s.image_ids is null or e.image_id = any(%1$s.image_ids))
      and (%1$s.exclude_image_id is null or e.image_id <> %1$s.exclude_image_id)
      and ((%1$s.sex is null and %1$s.age_min is null and %1$s.age_max is null) or exists (
            select 1 from cbir.patient p where p.id = i.patient_id
              and (%1$s.sex is null or p.sex = %1$s.sex)
              and (%1$s.age_min is null or p.age >= %1$s.age_min)
              and (%1$s.age_max is null or p.age <= %1$s.age_max)))$w$
$p$;

-- whether a cohort_filter (%1$s, as in cbir.cohort_predicate) filters on nothing but ids: then every
-- non-excluded image qualifies, and a search whose gallery has no excluded image needs no image row
-- (cbir.knn__<model>'s fast path). Keep in step with cbir.cohort_predicate().
create or replace function cbir.cohort_ids_only()
returns text
language sql immutable
set search_path = pg_catalog, pg_temp
as $p$
  select $w$(%1$s.split is null and %1$s.dataset_id is null and %1$s.modality is null and %1$s.label_id is null
      and %1$s.patient_id is null and %1$s.exclude_patient_id is null and %1$s.sex is null
      and %1$s.age_min is null and %1$s.age_max is null)$w$
$p$;

-- the images of a cohort, for joins, BI and evaluation scopes: select * from cbir.cohort_images('{"cohort": "x"}')
create or replace function cbir.cohort_images(p_cohort jsonb, p_query_image_id bigint default null)
returns table (image_id bigint)
language plpgsql stable
set search_path = pg_catalog, public, pg_temp
as $$
begin
  return query execute format(
    'select i.id from cbir.image i cross join lateral (select i.id as image_id) e where %s order by i.id',
    format(cbir.cohort_predicate(), '($1)'))
    using cbir.resolve_cohort(p_cohort, p_query_image_id);
end
$$;
comment on function cbir.cohort_images(jsonb, bigint) is
  'the non-excluded images of a cohort (jsonb, as cbir.similar_images_v2 takes), by id';

-- what a search hit shows of an image (the CLI, the façade, the page and feedback join it to a ranking):
-- select ... from cbir.similar_images_v2(...) s cross join lateral cbir.image_facts(s.image_id) f.
-- SECURITY INVOKER: the caller's grants and row-level security apply, as to any read of cbir.image.
-- No SET clause, so the planner inlines it into the query that calls it (one plan, as a join would be);
-- every name in it is schema-qualified and its operators are pg_catalog's, which is always searched first.
create or replace function cbir.image_facts(p_image_id bigint)
returns table (label text, dataset text, split text, modality text, patient_id bigint, sex text, age real)
language sql stable
as $$
  select l.key, d.key, i.split, i.modality, i.patient_id, p.sex, p.age
  from cbir.image i
  join cbir.dataset d on d.id = i.dataset_id
  left join cbir.label l on l.id = i.label_id
  left join cbir.patient p on p.id = i.patient_id
  where i.id = p_image_id
$$;
comment on function cbir.image_facts(bigint) is
  'label, dataset, split, modality, patient id, sex and age of an image: the columns a search hit shows';

-- the generated search function of one model: static SQL over its table, written for its indexes
create or replace function cbir.search_function_source(p_model text)
returns text
language plpgsql stable
set search_path = pg_catalog, public, pg_temp
as $gen$
declare
  s record;
  v_exact text;
  v_auto text;
  v_from text;
  v_ann_from text;
  v_where constant text := format(cbir.cohort_predicate(), 'f');
begin
  select * into s from cbir.model_vector_space(p_model);
  v_exact := case when s.column_type = 'halfvec' then 'e.embedding <=> v_vec::halfvec' else 'e.embedding <=> v_vec' end;
  v_auto := case when s.ann_index is null and s.binary_index is not null then 'binary' else 'hnsw' end;
  v_from := format('cbir.%I e join cbir.image i on i.id = e.image_id', s.table_name);
  -- the index scans: each row the HNSW scan returns looks up its image (a lateral probe by primary key, so
  -- the planner cannot turn it around). Under a reader's row-level security a plain join was planned as a
  -- scan of every visible image, then a sort (92_access.sql).
  -- (the columns cbir.cohort_predicate() reads; a reader may not read all of cbir.image's)
  v_ann_from := format('cbir.%I e cross join lateral (select i.excluded, i.split, i.dataset_id, i.modality, i.label_id,'
                       ' i.patient_id from cbir.image i where i.id = e.image_id offset 0) i', s.table_name);
  return format($src$
create or replace function cbir.%1$I(p_vec vector, p_k int, f cbir.cohort_filter, p_method text, p_image_id bigint)
returns table (rank int, image_id bigint, similarity double precision)
language plpgsql stable rows 10
set search_path = pg_catalog, public, pg_temp
set plan_cache_mode = force_generic_plan
set hnsw.iterative_scan = strict_order
as $fn$
-- generated by cbir.refresh_search_functions for model %2$s (index %8$s, binary index %9$s); do not edit
-- Iterative index scans (strict_order), so filtered rows are replaced: set for the call, restored after it.
-- Generic plans: each statement is planned once per session. A custom plan (PL/pgSQL's default for the
-- first calls, and for good when its estimate beats the generic one's) re-plans the search on every call,
-- a fifth of its time. Every statement's shape is fixed by its joins, so the generic plan is the same
-- plan; the id-list search has its own statement so that its ids stay an index condition.
declare
  v_vec vector := p_vec;
  v_method text := coalesce(p_method, 'auto');
  v_ids bigint[];
  v_sims double precision[];
  v_more int;
  v_fetch int;
  v_old_ef text := current_setting('hnsw.ef_search', true);
  v_ef int;
begin
  if v_vec is null and p_image_id is not null then
    select e.embedding::vector into v_vec from cbir.%3$I e where e.image_id = p_image_id;
    if v_vec is null and not exists (select 1 from cbir.image i where i.id = p_image_id) then
      raise exception 'image %% does not exist', p_image_id using errcode = 'no_data_found';
    elsif v_vec is null then
      raise exception 'image %% has no embedding for model %%', p_image_id, %2$L using errcode = 'no_data_found';
    end if;
  end if;
  if v_vec is null then
    raise exception 'the query vector is null' using errcode = 'null_value_not_allowed';
  end if;
  if vector_dims(v_vec) <> %4$s then
    raise exception 'the query vector has %% dimensions, model %% has %%', vector_dims(v_vec), %2$L, %4$s
      using errcode = 'invalid_parameter_value';
  end if;
  if v_method = 'auto' then
    v_method := %5$L;
  end if;
  if f.image_ids is not null and cardinality(f.image_ids) <= 4096 then
    v_method := 'exact';  -- a short explicit list: compare each of its rows
  end if;
  if v_method <> 'exact' then
    -- ef_search >= the rows the index scan must return, the query image it skips included (pgvector caps
    -- it at 1,000; iterative scans go on past it, but each further round searches the graph again);
    -- restored before returning
    v_fetch := case when v_method = 'binary' then greatest(p_k * 4, p_k + 40) else p_k end
               + (f.exclude_image_id is not null)::int;
    v_ef := coalesce(nullif(v_old_ef, '')::int, 40);
    if v_fetch > v_ef and v_ef < 1000 then
      perform set_config('hnsw.ef_search', least(v_fetch, 1000)::text, true);
    end if;
    if v_method = 'hnsw' and %14$s and not exists (select 1 from cbir.image i where i.excluded) then
      -- no image filter and no excluded image (cbir.image_excluded, a partial index, is empty): the index
      -- rows need no image looked up (a reader's row-level security on the table still applies)
      select array_agg(c.image_id order by c.dist, c.image_id), array_agg(1 - c.dist order by c.dist, c.image_id)
        into v_ids, v_sims
        from (select e.image_id, %6$s as dist from cbir.%3$I e
              where (f.image_ids is null or e.image_id = any(f.image_ids))
                and (f.exclude_image_id is null or e.image_id <> f.exclude_image_id)
              order by %11$s <=> %12$s limit p_k) c;
    elsif v_method = 'hnsw' then
      -- the shape an HNSW index serves: order by <indexed expr> <=> <query> limit k; distances reported
      -- at the stored precision
      select array_agg(c.image_id order by c.dist, c.image_id), array_agg(1 - c.dist order by c.dist, c.image_id)
        into v_ids, v_sims
        from (select e.image_id, %6$s as dist from %13$s
              where %10$s
              order by %11$s <=> %12$s limit p_k) c;
    else
      -- over-fetch by Hamming distance on the binary-quantised index, then re-rank by exact cosine
      select array_agg(c.image_id order by c.dist, c.image_id), array_agg(1 - c.dist order by c.dist, c.image_id)
        into v_ids, v_sims
        from (select b.image_id, b.dist from
               (select e.image_id, %6$s as dist from %13$s
                where %10$s
                order by binary_quantize(%11$s)::bit(%4$s) <~> binary_quantize(%12$s)::bit(%4$s) limit v_fetch) b
              order by b.dist, b.image_id limit p_k) c;
    end if;
    if v_fetch > v_ef and v_ef < 1000 then
      perform set_config('hnsw.ef_search', coalesce(v_old_ef, '40'), true);
    end if;
    if coalesce(cardinality(v_ids), 0) < p_k then
      -- an index scan can come back short (max_scan_tuples reached on a very selective filter)
      select count(*) into v_more from (select 1 from %7$s where %10$s limit p_k) c;
      if v_more > coalesce(cardinality(v_ids), 0) then
        v_method := 'exact';
      end if;
    end if;
  end if;
  if v_method = 'exact' and f.image_ids is not null then
    -- the listed rows, looked up by primary key, each compared
    select array_agg(c.image_id order by c.dist, c.image_id), array_agg(1 - c.dist order by c.dist, c.image_id)
      into v_ids, v_sims
      from (select e.image_id, (%6$s) + 0 as dist from %7$s
            where e.image_id = any(f.image_ids) and %10$s
            order by (%6$s) + 0, e.image_id limit p_k) c;
  elsif v_method = 'exact' then
    -- every row of the cohort compared ("+ 0" keeps the planner off the index): a dynamic statement, so
    -- it is planned for this call's values (a scan of the whole cohort hashes the images; a generic plan
    -- probed every image by key, 1.7x slower)
    execute %15$L into v_ids, v_sims using v_vec, f, p_k;
  end if;
  return query
    select u.ord::int, u.id, u.sim
    from unnest(coalesce(v_ids, '{}'), coalesce(v_sims, '{}')) with ordinality as u(id, sim, ord);
end
$fn$;
$src$,
    'knn__' || p_model, p_model, s.table_name, s.dim, v_auto, v_exact, v_from,
    coalesce(s.ann_index, 'none'), coalesce(s.binary_index, 'none'), v_where,
    replace(s.distance_expr, '$1', 'v_vec'), replace(s.query_expr, '$1', 'v_vec'), v_ann_from,
    format(cbir.cohort_ids_only(), 'f'),
    format('select array_agg(c.image_id order by c.dist, c.image_id), array_agg(1 - c.dist order by c.dist, c.image_id)'
           ' from (select e.image_id, (%1$s) + 0 as dist from %2$s where %3$s order by (%1$s) + 0, e.image_id limit $3) c',
           replace(v_exact, 'v_vec', '$1'), v_from, format(cbir.cohort_predicate(), '($2)')));
end
$gen$;

-- the generated dispatcher cbir.knn_dispatch: one static call of each model's cbir.knn__<model>, so
-- cbir.knn_v2 needs neither a catalog lookup nor a dynamic statement (planned on every call) per search
create or replace function cbir.dispatch_function_source()
returns text
language sql stable
set search_path = pg_catalog, public, pg_temp
as $gen$
  with m as (
    select substr(p.proname, 6) as model, p.proname
    from pg_proc p
    where p.pronamespace = 'cbir'::regnamespace and p.proname like 'knn\_\_%'
  ), arms as (
    select coalesce(string_agg(m.model, ', ' order by m.model), 'none') as models,
           string_agg(format('    when %L then%s      return query select * from cbir.%I(p_vec, p_k, f, p_method, p_image_id);',
                             m.model, chr(10), m.proname), chr(10) order by m.model) as whens
    from m
  )
  select format($src$
create or replace function cbir.knn_dispatch(p_vec vector, p_model text, p_k int, f cbir.cohort_filter,
                                             p_method text, p_image_id bigint)
returns table (rank int, image_id bigint, similarity double precision)
language plpgsql stable rows 10
set search_path = pg_catalog, public, pg_temp
as $fn$
-- generated by cbir.refresh_search_functions for models: %1$s; do not edit
begin
%2$s
end
$fn$;
$src$,
    a.models,
    case when a.whens is null then a.unknown
         else format(e'  case p_model\n%s\n    else\n  %s\n  end case;', a.whens, replace(a.unknown, e'\n', e'\n  ')) end)
  from (select arms.*, $u$  perform cbir.model_vector_space(p_model);  -- an unknown model or a missing table: its own error
  raise exception 'model % has no search function: run select cbir.refresh_search_functions()',
    to_jsonb(p_model)::text using errcode = 'undefined_function';$u$ as unknown from arms) a
$gen$;

-- a generated function's source with its header's fingerprint written into its body: what
-- cbir.refresh_search_functions compares is the body (pg_proc.prosrc, the text between the $fn$ quotes,
-- equal to the letter), and a change to only the header (a SET or ROWS clause) must rewrite the function
-- on a database that already has it
create or replace function cbir.fingerprinted(p_src text)
returns text
language sql immutable
set search_path = pg_catalog, public, pg_temp
as $$
  select replace(p_src, e'as $fn$\n',
                 format(e'as $fn$\n-- header md5 %s\n', md5(split_part(p_src, e'as $fn$\n', 1))))
$$;

-- whether generated function cbir.<p_name> exists with the body of source p_src (cbir.fingerprinted's
-- output: the body is the text between its $fn$ quotes, and equal to the letter)
create or replace function cbir.generated_is_current(p_name text, p_src text)
returns boolean
language sql stable
set search_path = pg_catalog, public, pg_temp
as $$
  select exists (select 1 from pg_proc p
                 where p.pronamespace = 'cbir'::regnamespace and p.proname = p_name
                   and p.prosrc = split_part(split_part(p_src, 'as $fn$', 2), '$fn$', 1))
$$;

-- (re)write cbir.knn__<model> for one model or every model with an embedding table, and the dispatcher
-- cbir.knn_dispatch; drops the functions of models without one. Returns how many functions it wrote.
-- Serialised by an advisory lock, and a function whose source did not change is left alone (concurrent
-- ingest workers may all call this).
create or replace function cbir.refresh_search_functions(p_model text default null)
returns int
language plpgsql volatile
set search_path = pg_catalog, public, pg_temp
as $$
declare
  r record;
  v_src text;
  n int := 0;
begin
  perform pg_advisory_xact_lock(hashtext('cbir.refresh_search_functions'));
  for r in
    select p.oid::regprocedure as fn, substr(p.proname, 6) as model
    from pg_proc p
    where p.pronamespace = 'cbir'::regnamespace and p.proname like 'knn\_\_%'
      and (p_model is null or p.proname = 'knn__' || p_model)
      and not exists (select 1 from cbir.embedded_models() m where m.key = substr(p.proname, 6))
  loop
    execute format('drop function %s', r.fn);
  end loop;
  for r in
    select m.key from cbir.embedded_models() m where p_model is null or m.key = p_model
  loop
    v_src := cbir.fingerprinted(cbir.search_function_source(r.key));
    if not cbir.generated_is_current('knn__' || r.key, v_src) then
      execute v_src;
      n := n + 1;
    end if;
  end loop;
  v_src := cbir.fingerprinted(cbir.dispatch_function_source());
  if not cbir.generated_is_current('knn_dispatch', v_src) then
    execute v_src;
    n := n + 1;
  end if;
  return n;
end
$$;
comment on function cbir.refresh_search_functions(text) is
  'write each model''s generated search function cbir.knn__<model> for its current table and indexes';

-- the engine: k nearest non-excluded images of a cohort to p_vec (or to stored image p_image_id's vector)
create or replace function cbir.knn_v2(
  p_vec vector,
  p_model text,
  p_k int default 10,
  p_filter cbir.cohort_filter default null,
  p_method text default 'auto',
  p_image_id bigint default null
)
returns table (rank int, image_id bigint, similarity double precision)
language plpgsql stable rows 10  -- k rows: the planner joins a search's hits row by row
set search_path = pg_catalog, public, pg_temp
as $$
begin
  if p_model is null or p_model !~ '^[a-z][a-z0-9_]{0,39}$' then
    raise exception 'invalid model name %: use lowercase letters, digits and _', coalesce(to_jsonb(p_model)::text, 'null')
      using errcode = 'invalid_parameter_value';
  end if;
  if p_k is null or p_k < 1 or p_k > 100000 then
    raise exception 'k must be between 1 and 100000, got %', coalesce(p_k::text, 'null')
      using errcode = 'invalid_parameter_value';
  end if;
  if p_method is null or p_method not in ('auto', 'hnsw', 'binary', 'exact') then
    raise exception 'unknown method %: use auto, hnsw, binary or exact', coalesce(to_jsonb(p_method)::text, 'null')
      using errcode = 'invalid_parameter_value';
  end if;
  return query
    select * from cbir.knn_dispatch(
      p_vec, p_model, p_k,
      coalesce(p_filter, row(null, null, null, null, null, null, null, null, null, null, null)::cbir.cohort_filter),
      p_method, p_image_id);
end
$$;
comment on function cbir.knn_v2(vector, text, int, cbir.cohort_filter, text, bigint) is
  'k nearest images of a cohort to a vector (or a stored image''s vector); method auto|hnsw|binary|exact';

-- a stored query image must exist (the one check the _v2 functions of an image share): its id, or an
-- error (no_data_found) when it does not exist or is not visible to the caller
create or replace function cbir.check_query_image(p_image_id bigint)
returns bigint
language plpgsql stable
set search_path = pg_catalog, public, pg_temp
as $$
begin
  if not exists (select 1 from cbir.image i where i.id = p_image_id) then
    raise exception 'image % does not exist', coalesce(p_image_id::text, 'null') using errcode = 'no_data_found';
  end if;
  return p_image_id;
end
$$;

create or replace function cbir.similar_images_v2(
  p_image_id bigint,
  p_model text,
  p_k int default 10,
  p_cohort jsonb default '{}',
  p_exclude_self boolean default true
)
returns table (rank int, image_id bigint, similarity double precision)
language sql stable
as $$
  select k.rank, k.image_id, k.similarity
  -- a missing image is reported by the search (no vector, no image); a null id here (coalesce only
  -- calls the check for one)
  from cbir.knn_v2(null, p_model, p_k,
                   cbir.resolve_cohort(p_cohort, coalesce(p_image_id, cbir.check_query_image(p_image_id)),
                                       coalesce(p_exclude_self, true)),
                   'auto', p_image_id) k
$$;
comment on function cbir.similar_images_v2(bigint, text, int, jsonb, boolean) is
  'k most similar images of a cohort (jsonb) to a stored image: (rank, image_id, similarity = 1 - cosine distance)';

create or replace function cbir.similar_to_vector_v2(
  p_vec vector,
  p_model text,
  p_k int default 10,
  p_cohort jsonb default '{}',
  p_query_image_id bigint default null
)
returns table (rank int, image_id bigint, similarity double precision)
language sql stable
as $$
  select k.rank, k.image_id, k.similarity
  from cbir.knn_v2(p_vec, p_model, p_k, cbir.resolve_cohort(p_cohort, p_query_image_id, p_query_image_id is not null)) k
$$;
comment on function cbir.similar_to_vector_v2(vector, text, int, jsonb, bigint) is
  'k most similar images of a cohort to a query vector; p_query_image_id: a stored query image, left out and '
  'the reference of patient same|other';

-- released signatures: thin wrappers over the _v2s. Their filter parameters become a cohort here, once:
-- legacy_cohort (the jsonb of split, dataset, modality, exclude_patient_id), legacy_image_cohort (a
-- stored image's: exclude_same_patient is patient 'other') and legacy_filter (resolved, for the engines).
create or replace function cbir.legacy_cohort(
  p_split text, p_dataset text, p_modality text, p_exclude_patient_id bigint default null
) returns jsonb
language sql immutable
as $$
  select jsonb_strip_nulls(jsonb_build_object('split', p_split, 'dataset', p_dataset, 'modality', p_modality,
                                              'exclude_patient_id', p_exclude_patient_id))
$$;

create or replace function cbir.legacy_image_cohort(
  p_split text, p_dataset text, p_modality text, p_exclude_same_patient boolean
) returns jsonb
language sql immutable
as $$
  select cbir.legacy_cohort(p_split, p_dataset, p_modality)
         || case when p_exclude_same_patient then '{"patient": "other"}'::jsonb else '{}'::jsonb end
$$;

create or replace function cbir.legacy_filter(
  p_split text, p_dataset text, p_modality text, p_exclude_patient_id bigint, p_exclude_image_id bigint
) returns cbir.cohort_filter
language sql stable
as $$
  select cbir.resolve_cohort(cbir.legacy_cohort(p_split, p_dataset, p_modality, p_exclude_patient_id),
                             p_exclude_image_id, p_exclude_image_id is not null)
$$;

create or replace function cbir.knn(
  p_vec vector,
  p_model text,
  p_k int default 10,
  p_split text default null,
  p_dataset text default null,
  p_modality text default null,
  p_exclude_patient_id bigint default null,
  p_exclude_image_id bigint default null,
  p_method text default 'auto'
)
returns table (rank int, image_id bigint, similarity double precision)
language sql stable
as $$
  select k.rank, k.image_id, k.similarity
  from cbir.knn_v2(p_vec, p_model, p_k,
                   cbir.legacy_filter(p_split, p_dataset, p_modality, p_exclude_patient_id, p_exclude_image_id),
                   p_method) k
$$;
comment on function cbir.knn(vector, text, int, text, text, text, bigint, bigint, text) is
  'k nearest images to a vector (cosine); method auto|hnsw|binary|exact. Released signature: see cbir.knn_v2.';

create or replace function cbir.similar_to_vector(
  p_vec vector,
  p_model text,
  p_k int default 10,
  p_split text default null,
  p_dataset text default null,
  p_modality text default null,
  p_exclude_patient_id bigint default null,
  p_exclude_image_id bigint default null
)
returns table (rank int, image_id bigint, similarity double precision)
language sql stable
as $$
  select k.rank, k.image_id, k.similarity
  from cbir.knn(p_vec, p_model, p_k, p_split, p_dataset, p_modality, p_exclude_patient_id, p_exclude_image_id, 'auto') k
$$;
comment on function cbir.similar_to_vector(vector, text, int, text, text, text, bigint, bigint) is
  'k most similar images to a query vector: (rank, image_id, similarity = 1 - cosine distance). Released signature: see cbir.similar_to_vector_v2.';

create or replace function cbir.similar_images(
  p_image_id bigint,
  p_model text,
  p_k int default 10,
  p_split text default null,
  p_dataset text default null,
  p_modality text default null,
  p_exclude_same_patient boolean default false,
  p_exclude_self boolean default true
)
returns table (rank int, image_id bigint, similarity double precision)
language sql stable
as $$
  select k.rank, k.image_id, k.similarity
  from cbir.similar_images_v2(p_image_id, p_model, p_k,
                              cbir.legacy_image_cohort(p_split, p_dataset, p_modality, p_exclude_same_patient),
                              p_exclude_self) k
$$;
comment on function cbir.similar_images(bigint, text, int, text, text, text, boolean, boolean) is
  'k most similar images to a stored image: (rank, image_id, similarity = 1 - cosine distance). Released signature: see cbir.similar_images_v2.';

-- saved cohorts by name (the table is in alembic revision 0004): validated by cbir.resolve_cohort
create or replace function cbir.save_cohort(
  p_name text,
  p_filter jsonb default '{}',
  p_image_ids bigint[] default null,
  p_description text default null
)
returns cbir.cohort
language plpgsql volatile
set search_path = pg_catalog, public, pg_temp
as $$
declare
  r cbir.cohort;
begin
  if p_name is null or p_name !~ '^[A-Za-z0-9][A-Za-z0-9 ._-]{0,62}$' then
    raise exception 'invalid cohort name %: letters, digits, space . _ - (at most 63)', coalesce(to_jsonb(p_name)::text, 'null')
      using errcode = 'invalid_parameter_value';
  end if;
  if coalesce(p_filter, '{}') ? 'cohort' or coalesce(p_filter, '{}') ? 'patient' then
    raise exception 'invalid cohort: a saved cohort cannot refer to another cohort or to a query''s patient'
      using errcode = 'invalid_parameter_value';
  end if;
  perform cbir.resolve_cohort(coalesce(p_filter, '{}'));
  if p_image_ids is not null and array_position(p_image_ids, null) is not null then
    raise exception 'invalid cohort: image ids must not be null' using errcode = 'invalid_parameter_value';
  end if;
  insert into cbir.cohort as c (name, filter, image_ids, description)
  values (p_name, jsonb_strip_nulls(coalesce(p_filter, '{}')),
          (select array_agg(distinct x order by x) from unnest(p_image_ids) x), p_description)
  on conflict (name) do update
    set filter = excluded.filter, image_ids = excluded.image_ids, description = excluded.description,
        created_by = current_user, created_at = now()
  returning c.* into r;
  return r;
end
$$;
comment on function cbir.save_cohort(text, jsonb, bigint[], text) is
  'save (or replace) a named cohort: a filter (jsonb, as cbir.similar_images_v2 takes) and/or an image id list';

-- refresh a model's generated search function when its encoder row appears, changes or goes
create or replace function cbir.encoder_search_function_trigger()
returns trigger
language plpgsql
security definer
set search_path = pg_catalog, public, pg_temp
as $$
begin
  perform cbir.refresh_search_functions(case when tg_op = 'DELETE' then old.key else new.key end);
  if tg_op = 'UPDATE' and old.key <> new.key then
    perform cbir.refresh_search_functions(old.key);
  end if;
  return null;
end
$$;
revoke all on function cbir.encoder_search_function_trigger() from public;
create or replace trigger encoder_search_function
  after insert or update or delete on cbir.encoder
  for each row execute function cbir.encoder_search_function_trigger();

select cbir.refresh_search_functions();
