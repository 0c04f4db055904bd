-- Similar-case search: the SQL API (docs/sql-api.md has the signatures and runnable examples).
--
--   cbir.similar_images(image_id, model, k, split, dataset, modality, exclude_same_patient, exclude_self)
--   cbir.similar_to_vector(vec, model, k, split, dataset, modality, exclude_patient_id, exclude_image_id)
--   cbir.knn(...)  the engine both call, with an explicit method ('auto' | 'hnsw' | 'binary' | 'exact')
--
-- Guarantees:
--   * exactly k rows when k matching rows exist: hnsw.ef_search (default 40, which silently caps an HNSW
--     scan) is raised to at least k, filters run as pgvector 0.8 iterative index scans (strict_order),
--     and if an index scan still comes back short while more matching rows exist, the query is re-run
--     as an exact scan;
--   * a model name is looked up in cbir.encoder before any SQL is built, and the table name then goes
--     through format('%I'); filter values are bound parameters, never spliced into SQL text;
--   * the GUCs changed for the scan are restored before the function returns.
-- A released signature is never changed in place: add a _v2 instead.
-- search_path: pgvector's types and operators live in the extension's schema (public); cbir objects are qualified.

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
  select c.relname into binary_index
  from pg_index x join pg_class c on c.oid = x.indexrelid
  where x.indrelid = v_rel and x.indisvalid and c.relname = cbir.index_name(p_model, 'hnsw_bq');
end
$$;

-- the engine: k nearest non-excluded images to p_vec by cosine similarity, with optional filters
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
language plpgsql stable
set search_path = pg_catalog, public, pg_temp
as $$
declare
  s record;
  v_dataset_id int;
  v_where text := 'not i.excluded';
  v_from text;
  v_sql text;
  v_method text := coalesce(p_method, 'auto');
  v_fetch int;
  v_ids bigint[];
  v_sims double precision[];
  v_more int;
  v_old_ef text;
  v_old_iter text;
  v_old_ef_int int;
begin
  select * into s from cbir.model_vector_space(p_model);
  if p_vec is null then
    raise exception 'the query vector is null' using errcode = 'null_value_not_allowed';
  end if;
  if vector_dims(p_vec) <> s.dim then
    raise exception 'the query vector has % dimensions, model % has %', vector_dims(p_vec), p_model, s.dim
      using errcode = 'invalid_parameter_value';
  end if;
  if p_k is null or p_k < 1 or p_k > 100000 then
    raise exception 'k must be between 1 and 100000, got %', coalesce(p_k::text, 'null')
      using errcode = 'invalid_parameter_value';
  end if;
  if v_method not in ('auto', 'hnsw', 'binary', 'exact') then
    raise exception 'unknown method %: use auto, hnsw, binary or exact', to_jsonb(v_method)::text
      using errcode = 'invalid_parameter_value';
  end if;
  if v_method = 'auto' then
    v_method := case when s.ann_index is null and s.binary_index is not null then 'binary' else 'hnsw' end;
  end if;

  -- filters: validated, then bound as parameters ($3 .. $7); only the filters given appear in the SQL
  if p_split is not null then
    if not p_split = any(cbir.splits()) then
      raise exception 'invalid split %: use train, val or test', to_jsonb(p_split)::text
        using errcode = 'invalid_parameter_value';
    end if;
    v_where := v_where || ' and i.split = $3';
  end if;
  if p_dataset is not null then
    select d.id into v_dataset_id from cbir.dataset d where d.key = p_dataset;
    if not found then
      raise exception 'unknown dataset %', to_jsonb(p_dataset)::text using errcode = 'invalid_parameter_value';
    end if;
    v_where := v_where || ' and i.dataset_id = $4';
  end if;
  if p_modality is not null then
    if p_modality !~ '^[A-Za-z0-9][A-Za-z0-9 ._/+-]{0,31}$' then
      raise exception 'invalid modality %', to_jsonb(p_modality)::text using errcode = 'invalid_parameter_value';
    end if;
    v_where := v_where || ' and i.modality = $5';
  end if;
  if p_exclude_patient_id is not null then
    v_where := v_where || ' and i.patient_id is distinct from $6';
  end if;
  if p_exclude_image_id is not null then
    v_where := v_where || ' and e.image_id <> $7';
  end if;
  v_from := format('cbir.%I e join cbir.image i on i.id = e.image_id', s.table_name);

  -- ef_search >= the rows the index scan must return (pgvector caps it at 1,000; iterative scans go on
  -- past it), iterative scans so filtered rows are replaced; both restored before returning
  v_old_ef := current_setting('hnsw.ef_search', true);
  v_old_iter := current_setting('hnsw.iterative_scan', true);
  v_old_ef_int := coalesce(nullif(v_old_ef, '')::int, 40);
  v_fetch := case when v_method = 'binary' then greatest(p_k * 4, p_k + 40) else p_k end;
  perform set_config('hnsw.ef_search', least(greatest(v_fetch, 40, v_old_ef_int), cbir.max_ef_search())::text, true);
  perform set_config('hnsw.iterative_scan', 'strict_order', true);

  if v_method = 'hnsw' then
    -- the shape an HNSW index serves: order by <distance expr> <=> <query> limit k
    v_sql := format(
      'select array_agg(c.image_id order by c.dist, c.image_id), array_agg(1 - c.dist order by c.dist, c.image_id)'
      ' from (select e.image_id, %1$s <=> %2$s as dist from %3$s where %4$s order by %1$s <=> %2$s limit $2) c',
      s.distance_expr, s.query_expr, v_from, v_where);
  elsif v_method = 'binary' then
    -- over-fetch by Hamming distance on the binary-quantised index, then re-rank by exact cosine
    v_sql := format(
      'select array_agg(c.image_id order by c.dist, c.image_id), array_agg(1 - c.dist order by c.dist, c.image_id)'
      ' from (select b.image_id, b.dist from'
      '   (select e.image_id, %1$s <=> %2$s as dist from %3$s where %4$s'
      '    order by binary_quantize(%1$s)::bit(%5$s) <~> binary_quantize(%2$s)::bit(%5$s) limit $8) b'
      '  order by b.dist, b.image_id limit $2) c',
      s.distance_expr, s.query_expr, v_from, v_where, s.dim);
  else
    v_sql := null;
  end if;

  if v_sql is not null then
    execute v_sql into v_ids, v_sims
      using p_vec, p_k, p_split, v_dataset_id, p_modality, p_exclude_patient_id, p_exclude_image_id, v_fetch;
    if coalesce(cardinality(v_ids), 0) < p_k then
      -- an index scan can come back short (max_scan_tuples reached on a very selective filter)
      execute format('select count(*) from (select 1 from %s where %s limit $2) c', v_from, v_where)
        into v_more
        using p_vec, p_k, p_split, v_dataset_id, p_modality, p_exclude_patient_id, p_exclude_image_id;
      if v_more > coalesce(cardinality(v_ids), 0) then
        v_sql := null;
      end if;
    end if;
  end if;

  if v_sql is null then
    -- exact: "+ 0" keeps the planner off the index, so every matching row is compared
    execute format(
      'select array_agg(c.image_id order by c.dist, c.image_id), array_agg(1 - c.dist order by c.dist, c.image_id)'
      ' from (select e.image_id, (%1$s <=> %2$s) + 0 as dist from %3$s where %4$s'
      '       order by (%1$s <=> %2$s) + 0, e.image_id limit $2) c',
      s.distance_expr, s.query_expr, v_from, v_where)
      into v_ids, v_sims
      using p_vec, p_k, p_split, v_dataset_id, p_modality, p_exclude_patient_id, p_exclude_image_id;
  end if;

  perform set_config('hnsw.ef_search', coalesce(v_old_ef, '40'), true);
  perform set_config('hnsw.iterative_scan', coalesce(v_old_iter, 'off'), true);

  return query
    select u.ord::int, u.id, u.sim
    from unnest(coalesce(v_ids, '{}'), coalesce(v_sims, '{}')) with ordinality as u(id, sim, ord)
    order by u.ord;
end
$$;

comment on function cbir.knn(vector, text, int, text, text, text, bigint, bigint, text) is
  'k nearest images to a vector (cosine); method auto|hnsw|binary|exact. Use cbir.similar_images / cbir.similar_to_vector.';

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
set search_path = pg_catalog, public, pg_temp
as $$
  select k.rank, k.image_id, k.similarity
  from cbir.knn(p_vec, p_model, p_k, p_split, p_dataset, p_modality, p_exclude_patient_id, p_exclude_image_id, 'auto') k
  order by k.rank
$$;

comment on function cbir.similar_to_vector(vector, text, int, text, text, text, bigint, bigint) is
  'k most similar images to a query vector: (rank, image_id, similarity = 1 - cosine distance)';

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
language plpgsql stable
set search_path = pg_catalog, public, pg_temp
as $$
declare
  s record;
  v_vec vector;
  v_patient bigint;
begin
  select * into s from cbir.model_vector_space(p_model);
  select i.patient_id into v_patient from cbir.image i where i.id = p_image_id;
  if not found then
    raise exception 'image % does not exist', coalesce(p_image_id::text, 'null') using errcode = 'no_data_found';
  end if;
  execute format('select e.embedding::vector from cbir.%I e where e.image_id = $1', s.table_name)
    into v_vec using p_image_id;
  if v_vec is null then
    raise exception 'image % has no embedding for model %', p_image_id, p_model using errcode = 'no_data_found';
  end if;
  return query
    select k.rank, k.image_id, k.similarity
    from cbir.knn(v_vec, p_model, p_k, p_split, p_dataset, p_modality,
                  case when p_exclude_same_patient then v_patient end,
                  case when p_exclude_self then p_image_id end, 'auto') k
    order by k.rank;
end
$$;

comment on function cbir.similar_images(bigint, text, int, text, text, text, boolean, boolean) is
  'k most similar images to a stored image: (rank, image_id, similarity = 1 - cosine distance)';
