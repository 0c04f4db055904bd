-- Better rankings without training: multi-model fusion, alpha query expansion and k-reciprocal
-- re-ranking, built on cbir.knn (20_search.sql). docs/sql-api.md has the signatures and examples.
--
--   cbir.similar_images_fused(image_id, models[], k, split, dataset, modality, exclude_same_patient,
--                             exclude_self, method, c, candidates, expand_m, alpha, search)
--   cbir.similar_to_vectors_fused(vecs[], models[], k, split, dataset, modality, exclude_patient_id,
--                                 exclude_image_id, method, c, candidates, expand_m, alpha, search)
--   cbir.expand_query(vec, model, m, alpha, <filters>, search)         alpha-QE query vector
--   cbir.similar_images_expanded(image_id, model, k, <filters>, m, alpha, search)
--   cbir.similar_to_vector_expanded(vec, model, k, <filters>, m, alpha, search)
--   cbir.similar_images_reranked(image_id, model, k, <filters>, k1, lambda, candidates, expand_m, alpha, search)
--   cbir.rerank_to_vector(vec, model, k, <filters>, k1, lambda, candidates, search)
--
-- Fusion. Each model's top K' comes from its own HNSW index through cbir.knn (the same filters, the same
-- exactly-k guarantee). K' = p_candidates, default max(4 k, 40): at k <= 10 that is pgvector's default
-- hnsw.ef_search, so an HNSW scan visits no more of the graph than a plain k = 10 search does. For
-- every image in the union of the lists the exact cosine similarity is recomputed in every model
-- (returned as similarities[], in the order of p_models). Only images with a vector in every model
-- are ranked. Methods:
--   'rrf'  reciprocal rank fusion (Cormack et al. 2009): score = sum over models of 1 / (c + rank),
--          rank 1-based within that model's top K' (a model whose list misses the image adds 0);
--   'mean' the mean over models of the exact cosine similarities.
-- Ties: score descending, then image_id. Exactly k rows when k images with a vector in every model
-- pass the filters: if the union yields fewer, K' doubles and the lists are fetched again.
--
-- alpha-QE (Radenovic et al. 2018): q' = q/|q| + sum_j max(s_j, 0)^alpha * v_j/|v_j| over the query's top
-- m neighbours v_j (similarity s_j) under the same filters, then searched again (cosine ignores the
-- length, so this is the weighted mean). m = 0 leaves the query unchanged.
--
-- k-reciprocal re-ranking, a documented simplification of Zhong et al. 2017: the neighbourhoods are
-- computed inside S = {query} + its top K' candidates (not the whole gallery), without the Gaussian
-- weights, the R* expansion and the local query expansion of the paper:
--   N(p) = the k1 + 1 nearest points of p in S (p itself included), by exact cosine;
--   R(p) = {x in N(p) : p in N(x)}   (k-reciprocal neighbours);
--   J(q, c) = |R(q) & R(c)| / |R(q) | R(c)|   (Jaccard similarity);
--   score(c) = (1 - lambda) J(q, c) + lambda s(q, c)   (Zhong's d* = (1 - lambda) d_J + lambda d).
-- K' = p_candidates, default max(k, 3 k1). Ties: score descending, then image_id.
--
-- Every parameter is validated before any SQL is built; model names go through cbir.model_vector_space
-- (a row of cbir.encoder) and format('%I'); values are bound parameters.

-- the weighted-mean (alpha-QE) query vector of p_vec among the rows the filters allow
create or replace function cbir.expand_query(
  p_vec vector,
  p_model text,
  p_m int default 2,
  p_alpha double precision default 3,
  p_split text default null,
  p_dataset text default null,
  p_modality text default null,
  p_exclude_patient_id bigint default null,
  p_exclude_image_id bigint default null,
  p_search text default 'auto'
)
returns vector
language plpgsql stable
set search_path = pg_catalog, public, pg_temp
as $$
declare
  s record;
  v_out vector;
begin
  if p_m is null or p_m < 0 or p_m > 1000 then
    raise exception 'expansion m must be between 0 and 1000, got %', coalesce(p_m::text, 'null')
      using errcode = 'invalid_parameter_value';
  end if;
  if p_alpha is null or p_alpha < 0 or p_alpha > 100 or p_alpha = 'NaN' then
    raise exception 'expansion alpha must be between 0 and 100, got %', coalesce(p_alpha::text, 'null')
      using errcode = 'invalid_parameter_value';
  end if;
  if p_vec is null then
    raise exception 'the query vector is null' using errcode = 'null_value_not_allowed';
  end if;
  if p_m = 0 then
    return p_vec;
  end if;
  select * into s from cbir.model_vector_space(p_model);
  execute format(
    'select l2_normalize($1) + coalesce(sum(l2_normalize(e.embedding::vector)'
    '         * array_fill(power(greatest(n.similarity, 0), $2)::real, array[$3])::vector), $4)'
    ' from cbir.knn($1, $5, $6, $7, $8, $9, $10, $11, $12) n join cbir.%I e on e.image_id = n.image_id',
    s.table_name)
    into v_out
    using p_vec, p_alpha, s.dim, array_fill(0::real, array[s.dim])::vector, p_model, p_m,
          p_split, p_dataset, p_modality, p_exclude_patient_id, p_exclude_image_id, p_search;
  return v_out;
end
$$;

comment on function cbir.expand_query(vector, text, int, double precision, text, text, text, bigint, bigint, text) is
  'alpha-QE: the query plus its top-m neighbours weighted by similarity^alpha (unit vectors), under the same filters';

create or replace function cbir.similar_to_vector_expanded(
  p_vec vector,
  p_model text,
  p_k int default 10,
  p_split text default null,
  p_dataset text default null,
  p_modality text default null,
  p_exclude_patient_id bigint default null,
  p_exclude_image_id bigint default null,
  p_m int default 2,
  p_alpha double precision default 3,
  p_search text default 'auto'
)
returns table (rank int, image_id bigint, similarity double precision)
language sql stable
set search_path = pg_catalog, public, pg_temp
as $$
  select k.rank, k.image_id, k.similarity
  from cbir.knn(cbir.expand_query(p_vec, p_model, p_m, p_alpha, p_split, p_dataset, p_modality,
                                  p_exclude_patient_id, p_exclude_image_id, p_search),
                p_model, p_k, p_split, p_dataset, p_modality, p_exclude_patient_id, p_exclude_image_id, p_search) k
  order by k.rank
$$;

comment on function cbir.similar_to_vector_expanded(vector, text, int, text, text, text, bigint, bigint, int, double precision, text) is
  'k most similar images to an alpha-QE expanded query vector; similarity is to the expanded query';

-- a stored image's vector in one model, with the errors similar_images gives
create or replace function cbir.image_vector(p_image_id bigint, p_model text)
returns vector
language plpgsql stable
set search_path = pg_catalog, public, pg_temp
as $$
declare
  s record;
  v_vec vector;
begin
  select * into s from cbir.model_vector_space(p_model);
  perform 1 from cbir.image i where i.id = p_image_id;
  if not found then
    raise exception 'image % does not exist', coalesce(p_image_id::text, 'null') using errcode = 'no_data_found';
  end if;
  execute format('select e.embedding::vector from cbir.%I e where e.image_id = $1', s.table_name)
    into v_vec using p_image_id;
  if v_vec is null then
    raise exception 'image % has no embedding for model %', p_image_id, p_model using errcode = 'no_data_found';
  end if;
  return v_vec;
end
$$;

create or replace function cbir.similar_images_expanded(
  p_image_id bigint,
  p_model text,
  p_k int default 10,
  p_split text default null,
  p_dataset text default null,
  p_modality text default null,
  p_exclude_same_patient boolean default false,
  p_exclude_self boolean default true,
  p_m int default 2,
  p_alpha double precision default 3,
  p_search text default 'auto'
)
returns table (rank int, image_id bigint, similarity double precision)
language sql stable
set search_path = pg_catalog, public, pg_temp
as $$
  select x.rank, x.image_id, x.similarity
  from cbir.similar_to_vector_expanded(
         cbir.image_vector(p_image_id, p_model), p_model, p_k, p_split, p_dataset, p_modality,
         case when p_exclude_same_patient then (select i.patient_id from cbir.image i where i.id = p_image_id) end,
         case when p_exclude_self then p_image_id end, p_m, p_alpha, p_search) x
  order by x.rank
$$;

comment on function cbir.similar_images_expanded(bigint, text, int, text, text, text, boolean, boolean, int, double precision, text) is
  'k most similar images to a stored image after alpha-QE (m neighbours, weights similarity^alpha)';

-- fusion of several models' rankings: one query vector per model, in the order of p_models
create or replace function cbir.similar_to_vectors_fused(
  p_vecs vector[],
  p_models text[],
  p_k int default 10,
  p_split text default null,
  p_dataset text default null,
  p_modality text default null,
  p_exclude_patient_id bigint default null,
  p_exclude_image_id bigint default null,
  p_method text default 'rrf',
  p_c double precision default 60,
  p_candidates int default null,
  p_expand_m int default 0,
  p_alpha double precision default 3,
  p_search text default 'auto'
)
returns table (rank int, image_id bigint, score double precision, similarities double precision[])
language plpgsql stable
set search_path = pg_catalog, public, pg_temp
as $$
declare
  n int := coalesce(cardinality(p_models), 0);
  s record;
  i int;
  v_kp int;
  v_q vector[] := '{}';
  v_ids bigint[];
  v_ranks int[];
  v_sims double precision[];
  c_model int[];
  c_ids bigint[];
  c_rank int[];
  s_model int[];
  s_ids bigint[];
  s_sims double precision[];
  v_union bigint[];
  v_sims_sql text[] := '{}';
  v_short boolean;
  v_rows int;
begin
  if n < 1 or n > 16 then
    raise exception 'give between 1 and 16 models, got %', n using errcode = 'invalid_parameter_value';
  end if;
  if (select count(distinct m) from unnest(p_models) m) <> n or array_position(p_models, null) is not null then
    raise exception 'models must be distinct and not null: %', to_jsonb(p_models)::text
      using errcode = 'invalid_parameter_value';
  end if;
  if coalesce(cardinality(p_vecs), 0) <> n or array_position(p_vecs, null) is not null then
    raise exception 'give one query vector per model (% models, % vectors)', n, coalesce(cardinality(p_vecs), 0)
      using errcode = 'invalid_parameter_value';
  end if;
  if p_method is null or p_method not in ('rrf', 'mean') then
    raise exception 'unknown fusion method %: use rrf or mean', coalesce(to_jsonb(p_method)::text, 'null')
      using errcode = 'invalid_parameter_value';
  end if;
  if p_c is null or p_c < 0 or p_c > 1e6 or p_c = 'NaN' then
    raise exception 'rrf c must be between 0 and 1000000, got %', coalesce(p_c::text, 'null')
      using errcode = 'invalid_parameter_value';
  end if;
  if p_k is null or p_k < 1 or p_k > 100000 then
    raise exception 'k must be between 1 and 100000, got %', coalesce(p_k::text, 'null')
      using errcode = 'invalid_parameter_value';
  end if;
  if p_candidates is not null and (p_candidates < p_k or p_candidates > 100000) then
    raise exception 'candidates must be between k (%) and 100000, got %', p_k, p_candidates
      using errcode = 'invalid_parameter_value';
  end if;
  if coalesce(p_search, '') not in ('auto', 'hnsw', 'exact') then
    raise exception 'unknown search %: use auto, hnsw or exact', coalesce(to_jsonb(p_search)::text, 'null')
      using errcode = 'invalid_parameter_value';
  end if;
  for i in 1 .. n loop  -- validates every name before any search runs
    select * into s from cbir.model_vector_space(p_models[i]);
    -- similarities at the stored precision, as cbir.knn reports them (whatever an index covers)
    v_sims_sql := v_sims_sql || format(
      'select coalesce(array_agg(e.image_id), ''{}''), coalesce(array_agg(1 - (%1$s)), ''{}'')'
      ' from cbir.%2$I e where e.image_id = any($2)',
      case when s.column_type = 'halfvec' then 'e.embedding <=> $1::halfvec' else 'e.embedding <=> $1' end,
      s.table_name);
  end loop;

  for i in 1 .. n loop  -- alpha-QE per model, once (m = 0: the query as given)
    v_q := v_q || cbir.expand_query(p_vecs[i], p_models[i], coalesce(p_expand_m, 0), p_alpha, p_split, p_dataset,
                                    p_modality, p_exclude_patient_id, p_exclude_image_id, p_search);
  end loop;
  v_kp := coalesce(p_candidates, greatest(4 * p_k, 40));
  loop
    c_model := '{}'; c_ids := '{}'; c_rank := '{}';
    s_model := '{}'; s_ids := '{}'; s_sims := '{}';
    v_short := true;
    for i in 1 .. n loop
      select coalesce(array_agg(k.image_id order by k.rank), '{}'), coalesce(array_agg(k.rank order by k.rank), '{}')
        into v_ids, v_ranks
        from cbir.knn(v_q[i], p_models[i], v_kp, p_split, p_dataset, p_modality,
                      p_exclude_patient_id, p_exclude_image_id, p_search) k;
      c_model := c_model || array_fill(i, array[cardinality(v_ids)]);
      c_ids := c_ids || v_ids;
      c_rank := c_rank || v_ranks;
      v_short := v_short and cardinality(v_ids) < v_kp;
    end loop;
    v_union := array(select distinct u from unnest(c_ids) u);
    -- the exact cosine similarity of every candidate in every model
    for i in 1 .. n loop
      execute v_sims_sql[i] into v_ids, v_sims using v_q[i], v_union;
      s_model := s_model || array_fill(i, array[cardinality(v_ids)]);
      s_ids := s_ids || v_ids;
      s_sims := s_sims || v_sims;
    end loop;
    select count(*) into v_rows
      from (select u.id from unnest(s_ids) u(id) group by u.id having count(*) = n) f;
    exit when v_rows >= p_k or v_short or v_kp >= 100000;
    v_kp := least(v_kp * 2, 100000);  -- images missing in one model crowded the lists: fetch more
  end loop;

  return query
    with cand as (
      select x.model, x.id, x.rnk from unnest(c_model, c_ids, c_rank) as x(model, id, rnk)
    ), sims as (
      select x.model, x.id, x.sim from unnest(s_model, s_ids, s_sims) as x(model, id, sim)
    ), complete as (
      select sims.id, array_agg(sims.sim order by sims.model) as sims_by_model, avg(sims.sim) as mean_sim
      from sims group by sims.id having count(*) = n
    ), scored as (
      select f.id, f.sims_by_model,
             case when p_method = 'rrf'
                  then (select coalesce(sum(1.0::double precision / (p_c + c.rnk)), 0) from cand c where c.id = f.id)
                  else f.mean_sim end as score
      from complete f
    )
    select (row_number() over (order by sc.score desc, sc.id))::int, sc.id, sc.score, sc.sims_by_model
    from scored sc
    order by sc.score desc, sc.id
    limit p_k;
end
$$;

comment on function cbir.similar_to_vectors_fused(vector[], text[], int, text, text, text, bigint, bigint, text, double precision, int, int, double precision, text) is
  'k images ranked by fusing several models (rrf | mean of exact cosines); one query vector per model';

create or replace function cbir.similar_images_fused(
  p_image_id bigint,
  p_models text[],
  p_k int default 10,
  p_split text default null,
  p_dataset text default null,
  p_modality text default null,
  p_exclude_same_patient boolean default false,
  p_exclude_self boolean default true,
  p_method text default 'rrf',
  p_c double precision default 60,
  p_candidates int default null,
  p_expand_m int default 0,
  p_alpha double precision default 3,
  p_search text default 'auto'
)
returns table (rank int, image_id bigint, score double precision, similarities double precision[])
language plpgsql stable
set search_path = pg_catalog, public, pg_temp
as $$
declare
  v_vecs vector[] := '{}';
  v_patient bigint;
  i int;
begin
  if coalesce(cardinality(p_models), 0) < 1 then
    raise exception 'give at least one model' using errcode = 'invalid_parameter_value';
  end if;
  select im.patient_id into v_patient from cbir.image im where im.id = p_image_id;
  if not found then
    raise exception 'image % does not exist', coalesce(p_image_id::text, 'null') using errcode = 'no_data_found';
  end if;
  for i in 1 .. cardinality(p_models) loop
    v_vecs := v_vecs || cbir.image_vector(p_image_id, p_models[i]);
  end loop;
  return query
    select f.rank, f.image_id, f.score, f.similarities
    from cbir.similar_to_vectors_fused(
           v_vecs, p_models, p_k, p_split, p_dataset, p_modality,
           case when p_exclude_same_patient then v_patient end,
           case when p_exclude_self then p_image_id end,
           p_method, p_c, p_candidates, p_expand_m, p_alpha, p_search) f
    order by f.rank;
end
$$;

comment on function cbir.similar_images_fused(bigint, text[], int, text, text, text, boolean, boolean, text, double precision, int, int, double precision, text) is
  'k most similar images to a stored image, fusing several models (rrf | mean of exact cosines)';

-- k-reciprocal re-ranking of a query vector's top K' (see the header for the simplification)
create or replace function cbir.rerank_to_vector(
  p_vec vector,
  p_model text,
  p_k int default 10,
  p_split text default null,
  p_dataset text default null,
  p_modality text default null,
  p_exclude_patient_id bigint default null,
  p_exclude_image_id bigint default null,
  p_k1 int default 20,
  p_lambda double precision default 0.3,
  p_candidates int default null,
  p_search text default 'auto'
)
returns table (rank int, image_id bigint, score double precision, similarity double precision)
language plpgsql stable
set search_path = pg_catalog, public, pg_temp
as $$
declare
  s record;
  v_kp int;
begin
  select * into s from cbir.model_vector_space(p_model);
  if p_k is null or p_k < 1 or p_k > 10000 then
    raise exception 'k must be between 1 and 10000 for re-ranking, got %', coalesce(p_k::text, 'null')
      using errcode = 'invalid_parameter_value';
  end if;
  if p_k1 is null or p_k1 < 1 or p_k1 > 1000 then
    raise exception 'k1 must be between 1 and 1000, got %', coalesce(p_k1::text, 'null')
      using errcode = 'invalid_parameter_value';
  end if;
  if p_lambda is null or p_lambda < 0 or p_lambda > 1 or p_lambda = 'NaN' then
    raise exception 'lambda must be between 0 and 1, got %', coalesce(p_lambda::text, 'null')
      using errcode = 'invalid_parameter_value';
  end if;
  if p_candidates is not null and (p_candidates < p_k or p_candidates > 10000) then
    raise exception 'candidates must be between k (%) and 10000, got %', p_k, p_candidates
      using errcode = 'invalid_parameter_value';
  end if;
  v_kp := coalesce(p_candidates, greatest(p_k, 3 * p_k1));
  return query execute format($q$
    with cand as (
      select k.image_id as id, k.similarity as sim
      from cbir.knn($1, $2, $3, $4, $5, $6, $7, $8, $9) k
    ), pts as (
      select -1::bigint as id, $1 as v
      union all
      select e.image_id, e.embedding::vector from cbir.%I e join cand on cand.id = e.image_id
    ), pair as (
      select a.id as a, b.id as b, 1 - (a.v <=> b.v) as sim from pts a cross join pts b
    ), nn as (
      select x.a, x.b from (
        select p.a, p.b, row_number() over (partition by p.a order by (p.a = p.b) desc, p.sim desc, p.b) as r
        from pair p) x
      where x.r <= $10 + 1
    ), rec as (
      select n1.a, n1.b from nn n1 join nn n2 on n2.a = n1.b and n2.b = n1.a
    ), rq as (
      select r.b from rec r where r.a = -1
    ), sizes as (
      select r.a, count(*) as n_r, count(rq.b) as n_inter from rec r left join rq on rq.b = r.b group by r.a
    ), jac as (
      select c.id,
             coalesce(z.n_inter, 0)::double precision
             / greatest((select count(*) from rq) + coalesce(z.n_r, 0) - coalesce(z.n_inter, 0), 1) as j
      from cand c left join sizes z on z.a = c.id
    )
    select (row_number() over (order by sc.score desc, sc.id))::int, sc.id, sc.score, sc.sim
    from (select c.id, c.sim, (1 - $11) * j.j + $11 * c.sim as score
          from cand c join jac j on j.id = c.id) sc
    order by sc.score desc, sc.id
    limit $12
  $q$, s.table_name)
  using p_vec, p_model, v_kp, p_split, p_dataset, p_modality, p_exclude_patient_id, p_exclude_image_id,
        p_search, p_k1, p_lambda, p_k;
end
$$;

comment on function cbir.rerank_to_vector(vector, text, int, text, text, text, bigint, bigint, int, double precision, int, text) is
  'k-reciprocal re-ranking (simplified Zhong et al. 2017) of a query vector''s top candidates';

create or replace function cbir.similar_images_reranked(
  p_image_id bigint,
  p_model text,
  p_k int default 10,
  p_split text default null,
  p_dataset text default null,
  p_modality text default null,
  p_exclude_same_patient boolean default false,
  p_exclude_self boolean default true,
  p_k1 int default 20,
  p_lambda double precision default 0.3,
  p_candidates int default null,
  p_expand_m int default 0,
  p_alpha double precision default 3,
  p_search text default 'auto'
)
returns table (rank int, image_id bigint, score double precision, similarity double precision)
language plpgsql stable
set search_path = pg_catalog, public, pg_temp
as $$
declare
  v_vec vector;
  v_patient bigint;
  v_excl_patient bigint;
  v_excl_image bigint;
begin
  v_vec := cbir.image_vector(p_image_id, p_model);
  select im.patient_id into v_patient from cbir.image im where im.id = p_image_id;
  v_excl_patient := case when p_exclude_same_patient then v_patient end;
  v_excl_image := case when p_exclude_self then p_image_id end;
  if coalesce(p_expand_m, 0) > 0 then
    v_vec := cbir.expand_query(v_vec, p_model, p_expand_m, p_alpha, p_split, p_dataset, p_modality,
                               v_excl_patient, v_excl_image, p_search);
  end if;
  return query
    select r.rank, r.image_id, r.score, r.similarity
    from cbir.rerank_to_vector(v_vec, p_model, p_k, p_split, p_dataset, p_modality, v_excl_patient,
                               v_excl_image, p_k1, p_lambda, p_candidates, p_search) r
    order by r.rank;
end
$$;

comment on function cbir.similar_images_reranked(bigint, text, int, text, text, text, boolean, boolean, int, double precision, int, int, double precision, text) is
  'k most similar images to a stored image after k-reciprocal re-ranking (optionally of an alpha-QE query)';
