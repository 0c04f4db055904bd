-- Better rankings without training: multi-model fusion, alpha query expansion and k-reciprocal
-- re-ranking, built on cbir.knn_v2 (20_search.sql). docs/sql-api.md has the signatures and examples.
-- Every function takes a cohort (jsonb, validated once by cbir.resolve_cohort), like cbir.similar_images_v2:
--
--   cbir.similar_images_fused_v2(image_id, models[], k, cohort, exclude_self, method, c, candidates,
--                                expand_m, alpha, search)
--   cbir.similar_to_vectors_fused_v2(vecs[], models[], k, cohort, query_image_id, method, c, candidates,
--                                    expand_m, alpha, search)
--   cbir.similar_images_expanded_v2(image_id, model, k, cohort, exclude_self, m, alpha, search)
--   cbir.similar_to_vector_expanded_v2(vec, model, k, cohort, query_image_id, m, alpha, search)
--   cbir.similar_images_reranked_v2(image_id, model, k, cohort, exclude_self, k1, lambda, candidates,
--                                   expand_m, alpha, search)
--   cbir.rerank_to_vector_v2(vec, model, k, cohort, query_image_id, k1, lambda, candidates, search)
--   engines over a resolved cohort (cbir.cohort_filter): cbir.fuse_v2, cbir.expand_query_v2, cbir.rerank_v2
--
-- The released signatures below are thin wrappers over these:
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
-- Fusion. Each model's top K' comes from its own HNSW index through cbir.knn_v2 (the same cohort, the
-- same exactly-k guarantee), all models in one statement (one round trip). K' = p_candidates, default
-- max(4 k, 40): at k <= 10 that is pgvector's default hnsw.ef_search, so an HNSW scan visits no more of
-- the graph than a plain k = 10 search does. Every returned image has its exact cosine similarity in
-- every model (similarities[], in the order of p_models): a list carries it for its own rows, and an
-- image missing from a model's list is looked up in that model. Only images with a vector in every model
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
-- Every parameter is validated once, in the engine that uses it (the cohort by cbir.resolve_cohort, k,
-- models and methods by cbir.knn_v2 and cbir.fuse_v2); values are bound parameters.

-- the weighted-mean (alpha-QE) query vector of p_vec among the rows of a cohort
create or replace function cbir.expand_query_v2(
  p_vec vector,
  p_model text,
  p_m int default 2,
  p_alpha double precision default 3,
  p_filter cbir.cohort_filter default null,
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
    ' from cbir.knn_v2($1, $5, $6, $7, $8) n join cbir.%I e on e.image_id = n.image_id',
    s.table_name)
    into v_out
    using p_vec, p_alpha, s.dim, array_fill(0::real, array[s.dim])::vector, p_model, p_m, p_filter, p_search;
  return v_out;
end
$$;
comment on function cbir.expand_query_v2(vector, text, int, double precision, cbir.cohort_filter, text) is
  'alpha-QE: the query plus its top-m neighbours of the cohort weighted by similarity^alpha (unit vectors)';

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

create or replace function cbir.similar_to_vector_expanded_v2(
  p_vec vector,
  p_model text,
  p_k int default 10,
  p_cohort jsonb default '{}',
  p_query_image_id bigint default null,
  p_m int default 2,
  p_alpha double precision default 3,
  p_search text default 'auto'
)
returns table (rank int, image_id bigint, similarity double precision)
language sql stable
set search_path = pg_catalog, public, pg_temp
as $$
  select k.rank, k.image_id, k.similarity
  from (select cbir.resolve_cohort(p_cohort, p_query_image_id, p_query_image_id is not null) as f) c
  cross join lateral cbir.knn_v2(cbir.expand_query_v2(p_vec, p_model, p_m, p_alpha, c.f, p_search),
                                 p_model, p_k, c.f, p_search) k
  order by k.rank
$$;
comment on function cbir.similar_to_vector_expanded_v2(vector, text, int, jsonb, bigint, int, double precision, text) is
  'k most similar images of a cohort to an alpha-QE expanded query vector; similarity is to the expanded query';

create or replace function cbir.similar_images_expanded_v2(
  p_image_id bigint,
  p_model text,
  p_k int default 10,
  p_cohort jsonb default '{}',
  p_exclude_self boolean default true,
  p_m int default 2,
  p_alpha double precision default 3,
  p_search text default 'auto'
)
returns table (rank int, image_id bigint, similarity double precision)
language sql stable
set search_path = pg_catalog, public, pg_temp
as $$
  select k.rank, k.image_id, k.similarity
  from (select cbir.resolve_cohort(p_cohort, cbir.check_query_image(p_image_id), coalesce(p_exclude_self, true)) as f) c
  cross join lateral cbir.knn_v2(
    cbir.expand_query_v2(cbir.image_vector(p_image_id, p_model), p_model, p_m, p_alpha, c.f, p_search),
    p_model, p_k, c.f, p_search) k
  order by k.rank
$$;
comment on function cbir.similar_images_expanded_v2(bigint, text, int, jsonb, boolean, int, double precision, text) is
  'k most similar images of a cohort to a stored image after alpha-QE (m neighbours, weights similarity^alpha)';

-- the cohort restricted to a list of ids (the candidates fusion re-scores exactly)
create or replace function cbir.cohort_only(p_filter cbir.cohort_filter, p_ids bigint[])
returns cbir.cohort_filter
language plpgsql immutable
set search_path = pg_catalog, public, pg_temp
as $$
declare
  f cbir.cohort_filter := p_filter;
begin
  f.image_ids := p_ids;
  return f;
end
$$;

-- the fusion parameters' one validation (cbir.fuse_v2's)
create or replace function cbir.check_fusion(
  p_vecs vector[], p_models text[], p_k int, p_method text, p_c double precision, p_candidates int
) returns void
language plpgsql immutable
set search_path = pg_catalog, public, pg_temp
as $$
declare
  n int := coalesce(cardinality(p_models), 0);
begin
  if n < 1 or n > 16 then
    raise exception 'give between 1 and 16 models, got %', n using errcode = 'invalid_parameter_value';
  end if;
  if (select count(distinct m) from unnest(p_models) m) <> n or array_position(p_models, null) is not null then
    raise exception 'models must be distinct and not null: %', to_jsonb(p_models)::text
      using errcode = 'invalid_parameter_value';
  end if;
  if p_vecs is not null and (cardinality(p_vecs) <> n or array_position(p_vecs, null) is not null) then
    raise exception 'give one query vector per model (% models, % vectors)', n, cardinality(p_vecs)
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
end
$$;

-- fusion engine: one statement fetches every model's top K' (from its own index) and fuses them. Each
-- list carries its rows' exact similarities (the search computes them at the stored precision), so only a
-- candidate missing from a model's list is looked up in that model. 'rrf' needs no similarity to rank: the
-- best k by rrf are looked up alone, and only when one of them lacks a vector in some model are all the
-- candidates (what 'mean' always scores). K' doubles only when too few images have a vector in every model.
-- p_vecs: one query vector per model, or null to use stored image p_image_id's vectors.
create or replace function cbir.fuse_v2(
  p_vecs vector[],
  p_models text[],
  p_k int,
  p_filter cbir.cohort_filter,
  p_image_id bigint default null,
  p_method text default 'rrf',
  p_c double precision default 60,
  p_candidates int default null,
  p_search text default 'auto'
)
returns table (rank int, image_id bigint, score double precision, similarities double precision[])
language plpgsql stable rows 10
set search_path = pg_catalog, public, pg_temp
set plan_cache_mode = force_generic_plan  -- the one statement is planned once per session, not per call
as $$
declare
  n int := coalesce(cardinality(p_models), 0);
  v_kp int;
  v_pick int;  -- how many of the best candidates by rrf are scored exactly; null: every candidate
  v_ids bigint[];
  v_scores double precision[];
  v_sims double precision[];
  v_short boolean;
  v_picked int;
begin
  perform cbir.check_fusion(p_vecs, p_models, p_k, p_method, p_c, p_candidates);
  v_kp := coalesce(p_candidates, greatest(4 * p_k, 40));
  v_pick := case when p_method = 'rrf' then p_k end;
  loop
    with q as (
      select m.ord::int as ord, m.model, p_vecs[m.ord] as vec
      from unnest(p_models) with ordinality as m(model, ord)
    ), cand as materialized (  -- every model's top K' from its own index, with their exact similarities
      select q.ord, c.image_id as id, c.rank as rnk, c.similarity as sim
      from q cross join lateral cbir.knn_v2(q.vec, q.model, v_kp, p_filter, p_search, p_image_id) c
    ), fused as (  -- each candidate's rrf score, from the lists' ranks alone
      select c.id, sum(1.0::double precision / (p_c + c.rnk)) as rrf from cand c group by c.id
    ), pick as materialized (  -- the candidates scored exactly
      select f.id, f.rrf from fused f order by f.rrf desc, f.id limit v_pick
    ), missing as (  -- per model, the picked candidates its list lacks
      select q.ord, array(select p.id from pick p
                          where not exists (select 1 from cand c where c.ord = q.ord and c.id = p.id)) as ids
      from q
    ), sims as (
      select c.ord, c.id, c.sim from cand c join pick p on p.id = c.id
      union all
      select m.ord, s.image_id, s.similarity
      from missing m join q on q.ord = m.ord
      cross join lateral cbir.knn_v2(q.vec, q.model, greatest(cardinality(m.ids), 1),
                                     cbir.cohort_only(p_filter, m.ids), 'exact', p_image_id) s
      where cardinality(m.ids) > 0
    ), complete as (  -- only images with a vector in every model are ranked
      select s.id, array_agg(s.sim order by s.ord) as sims_by_model, avg(s.sim) as mean_sim
      from sims s group by s.id having count(*) = n
    ), top as (
      select f.id, case when p_method = 'rrf' then p.rrf else f.mean_sim end as score, f.sims_by_model
      from complete f join pick p on p.id = f.id
      order by 2 desc, f.id limit p_k
    )
    select (select coalesce(max(x.n) < v_kp, true) from (select count(*) as n from cand c group by c.ord) x),
           array(select t.id from top t order by t.score desc, t.id),
           array(select t.score from top t order by t.score desc, t.id),
           array(select x from top t cross join lateral unnest(t.sims_by_model) x order by t.score desc, t.id),
           (select count(*) from pick)
      into v_short, v_ids, v_scores, v_sims, v_picked;
    if cardinality(v_ids) < v_picked and v_pick is not null then
      v_pick := null;  -- one of the best by rrf lacks a vector in some model: score every candidate
      continue;
    end if;
    exit when cardinality(v_ids) >= p_k or coalesce(v_short, true) or v_kp >= 100000;
    v_kp := least(v_kp * 2, 100000);  -- images missing in one model crowded the lists: fetch more
    v_pick := case when p_method = 'rrf' then p_k end;
  end loop;
  return query
    select u.ord::int, u.id, u.score, v_sims[(u.ord::int - 1) * n + 1 : u.ord::int * n]
    from unnest(v_ids, v_scores) with ordinality as u(id, score, ord);
end
$$;
comment on function cbir.fuse_v2(vector[], text[], int, cbir.cohort_filter, bigint, text, double precision, int, text) is
  'fusion engine: k images of a cohort ranked by fusing several models (rrf | mean of exact cosines)';

create or replace function cbir.similar_to_vectors_fused_v2(
  p_vecs vector[],
  p_models text[],
  p_k int default 10,
  p_cohort jsonb default '{}',
  p_query_image_id bigint default null,
  p_method text default 'rrf',
  p_c double precision default 60,
  p_candidates int default null,
  p_expand_m int default 0,
  p_alpha double precision default 3,
  p_search text default 'auto'
)
returns table (rank int, image_id bigint, score double precision, similarities double precision[])
language sql stable
set search_path = pg_catalog, public, pg_temp
as $$
  select x.rank, x.image_id, x.score, x.similarities
  from (select cbir.resolve_cohort(p_cohort, p_query_image_id, p_query_image_id is not null) as f) c
  cross join lateral cbir.fuse_v2(
    -- a missing or null vector, or a count unlike the models': fuse_v2 says so before any expansion
    case when coalesce(p_expand_m, 0) = 0 or coalesce(cardinality(p_vecs), 0) <> coalesce(cardinality(p_models), 0)
              or array_position(p_vecs, null) is not null then coalesce(p_vecs, '{}')
         else array(select cbir.expand_query_v2(v.vec, v.model, p_expand_m, p_alpha, c.f, p_search)
                    from unnest(p_vecs, p_models) with ordinality as v(vec, model, ord) order by v.ord) end,
    p_models, p_k, c.f, null, p_method, p_c, p_candidates, p_search) x
  order by x.rank
$$;
comment on function cbir.similar_to_vectors_fused_v2(vector[], text[], int, jsonb, bigint, text, double precision, int, int, double precision, text) is
  'k images of a cohort ranked by fusing several models (rrf | mean of exact cosines); one query vector per model';

create or replace function cbir.similar_images_fused_v2(
  p_image_id bigint,
  p_models text[],
  p_k int default 10,
  p_cohort jsonb default '{}',
  p_exclude_self boolean default true,
  p_method text default 'rrf',
  p_c double precision default 60,
  p_candidates int default null,
  p_expand_m int default 0,
  p_alpha double precision default 3,
  p_search text default 'auto'
)
returns table (rank int, image_id bigint, score double precision, similarities double precision[])
language sql stable
set search_path = pg_catalog, public, pg_temp
as $$
  select x.rank, x.image_id, x.score, x.similarities
  from (select cbir.resolve_cohort(p_cohort, cbir.check_query_image(p_image_id), coalesce(p_exclude_self, true)) as f) c
  cross join lateral cbir.fuse_v2(
    case when coalesce(p_expand_m, 0) = 0 then null  -- the stored vectors, read by each model's search
         else array(select cbir.expand_query_v2(cbir.image_vector(p_image_id, m.model), m.model, p_expand_m,
                                                p_alpha, c.f, p_search)
                    from unnest(p_models) with ordinality as m(model, ord) order by m.ord) end,
    p_models, p_k, c.f, case when coalesce(p_expand_m, 0) = 0 then p_image_id end,
    p_method, p_c, p_candidates, p_search) x
  order by x.rank
$$;
comment on function cbir.similar_images_fused_v2(bigint, text[], int, jsonb, boolean, text, double precision, int, int, double precision, text) is
  'k most similar images of a cohort to a stored image, fusing several models (rrf | mean of exact cosines)';

-- k-reciprocal re-ranking engine (see the header for the simplification) of a query vector's top K'
create or replace function cbir.rerank_v2(
  p_vec vector,
  p_model text,
  p_k int,
  p_filter cbir.cohort_filter,
  p_k1 int default 20,
  p_lambda double precision default 0.3,
  p_candidates int default null,
  p_search text default 'auto'
)
returns table (rank int, image_id bigint, score double precision, similarity double precision)
language plpgsql stable rows 10
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
      from cbir.knn_v2($1, $2, $3, $4, $5) k
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
      where x.r <= $6 + 1
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
    from (select c.id, c.sim, (1 - $7) * j.j + $7 * c.sim as score
          from cand c join jac j on j.id = c.id) sc
    order by sc.score desc, sc.id
    limit $8
  $q$, s.table_name)
  using p_vec, p_model, v_kp, p_filter, p_search, p_k1, p_lambda, p_k;
end
$$;
comment on function cbir.rerank_v2(vector, text, int, cbir.cohort_filter, int, double precision, int, text) is
  'k-reciprocal re-ranking engine (simplified Zhong et al. 2017) of a query vector''s top candidates in a cohort';

create or replace function cbir.rerank_to_vector_v2(
  p_vec vector,
  p_model text,
  p_k int default 10,
  p_cohort jsonb default '{}',
  p_query_image_id bigint default null,
  p_k1 int default 20,
  p_lambda double precision default 0.3,
  p_candidates int default null,
  p_search text default 'auto'
)
returns table (rank int, image_id bigint, score double precision, similarity double precision)
language sql stable
set search_path = pg_catalog, public, pg_temp
as $$
  select r.rank, r.image_id, r.score, r.similarity
  from (select cbir.resolve_cohort(p_cohort, p_query_image_id, p_query_image_id is not null) as f) c
  cross join lateral cbir.rerank_v2(p_vec, p_model, p_k, c.f, p_k1, p_lambda, p_candidates, p_search) r
  order by r.rank
$$;
comment on function cbir.rerank_to_vector_v2(vector, text, int, jsonb, bigint, int, double precision, int, text) is
  'k-reciprocal re-ranking (simplified Zhong et al. 2017) of a query vector''s top candidates in a cohort';

create or replace function cbir.similar_images_reranked_v2(
  p_image_id bigint,
  p_model text,
  p_k int default 10,
  p_cohort jsonb default '{}',
  p_exclude_self boolean default true,
  p_k1 int default 20,
  p_lambda double precision default 0.3,
  p_candidates int default null,
  p_expand_m int default 0,
  p_alpha double precision default 3,
  p_search text default 'auto'
)
returns table (rank int, image_id bigint, score double precision, similarity double precision)
language sql stable
set search_path = pg_catalog, public, pg_temp
as $$
  select r.rank, r.image_id, r.score, r.similarity
  from (select cbir.resolve_cohort(p_cohort, cbir.check_query_image(p_image_id), coalesce(p_exclude_self, true)) as f) c
  cross join lateral cbir.rerank_v2(
    cbir.expand_query_v2(cbir.image_vector(p_image_id, p_model), p_model, coalesce(p_expand_m, 0), p_alpha, c.f, p_search),
    p_model, p_k, c.f, p_k1, p_lambda, p_candidates, p_search) r
  order by r.rank
$$;
comment on function cbir.similar_images_reranked_v2(bigint, text, int, jsonb, boolean, int, double precision, int, int, double precision, text) is
  'k most similar images of a cohort to a stored image after k-reciprocal re-ranking (optionally of an alpha-QE query)';

-- ------------------------------------------------------------------ released signatures (wrappers)
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
language sql stable
set search_path = pg_catalog, public, pg_temp
as $$
  select cbir.expand_query_v2(p_vec, p_model, p_m, p_alpha,
           cbir.legacy_filter(p_split, p_dataset, p_modality, p_exclude_patient_id, p_exclude_image_id), p_search)
$$;
comment on function cbir.expand_query(vector, text, int, double precision, text, text, text, bigint, bigint, text) is
  'alpha-QE query vector under filters. Released signature: see cbir.expand_query_v2.';

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
  select x.rank, x.image_id, x.similarity
  from cbir.similar_to_vector_expanded_v2(
         p_vec, p_model, p_k, cbir.legacy_cohort(p_split, p_dataset, p_modality, p_exclude_patient_id),
         p_exclude_image_id, p_m, p_alpha, p_search) x
  order by x.rank
$$;
comment on function cbir.similar_to_vector_expanded(vector, text, int, text, text, text, bigint, bigint, int, double precision, text) is
  'alpha-QE search of a query vector. Released signature: see cbir.similar_to_vector_expanded_v2.';

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
  from cbir.similar_images_expanded_v2(
         p_image_id, p_model, p_k, cbir.legacy_image_cohort(p_split, p_dataset, p_modality, p_exclude_same_patient),
         p_exclude_self, p_m, p_alpha, p_search) x
  order by x.rank
$$;
comment on function cbir.similar_images_expanded(bigint, text, int, text, text, text, boolean, boolean, int, double precision, text) is
  'alpha-QE search of a stored image. Released signature: see cbir.similar_images_expanded_v2.';

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
language sql stable
set search_path = pg_catalog, public, pg_temp
as $$
  select x.rank, x.image_id, x.score, x.similarities
  from cbir.similar_to_vectors_fused_v2(
         p_vecs, p_models, p_k, cbir.legacy_cohort(p_split, p_dataset, p_modality, p_exclude_patient_id),
         p_exclude_image_id, p_method, p_c, p_candidates, p_expand_m, p_alpha, p_search) x
  order by x.rank
$$;
comment on function cbir.similar_to_vectors_fused(vector[], text[], int, text, text, text, bigint, bigint, text, double precision, int, int, double precision, text) is
  'fusion of several models for query vectors. Released signature: see cbir.similar_to_vectors_fused_v2.';

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
language sql stable
set search_path = pg_catalog, public, pg_temp
as $$
  select f.rank, f.image_id, f.score, f.similarities
  from cbir.similar_images_fused_v2(
         p_image_id, p_models, p_k, cbir.legacy_image_cohort(p_split, p_dataset, p_modality, p_exclude_same_patient),
         p_exclude_self, p_method, p_c, p_candidates, p_expand_m, p_alpha, p_search) f
  order by f.rank
$$;
comment on function cbir.similar_images_fused(bigint, text[], int, text, text, text, boolean, boolean, text, double precision, int, int, double precision, text) is
  'fusion of several models for a stored image. Released signature: see cbir.similar_images_fused_v2.';

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
language sql stable
set search_path = pg_catalog, public, pg_temp
as $$
  select r.rank, r.image_id, r.score, r.similarity
  from cbir.rerank_to_vector_v2(
         p_vec, p_model, p_k, cbir.legacy_cohort(p_split, p_dataset, p_modality, p_exclude_patient_id),
         p_exclude_image_id, p_k1, p_lambda, p_candidates, p_search) r
  order by r.rank
$$;
comment on function cbir.rerank_to_vector(vector, text, int, text, text, text, bigint, bigint, int, double precision, int, text) is
  'k-reciprocal re-ranking of a query vector. Released signature: see cbir.rerank_to_vector_v2.';

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
language sql stable
set search_path = pg_catalog, public, pg_temp
as $$
  select r.rank, r.image_id, r.score, r.similarity
  from cbir.similar_images_reranked_v2(
         p_image_id, p_model, p_k, cbir.legacy_image_cohort(p_split, p_dataset, p_modality, p_exclude_same_patient),
         p_exclude_self, p_k1, p_lambda, p_candidates, p_expand_m, p_alpha, p_search) r
  order by r.rank
$$;
comment on function cbir.similar_images_reranked(bigint, text, int, text, text, text, boolean, boolean, int, double precision, int, int, double precision, text) is
  'k-reciprocal re-ranking of a stored image. Released signature: see cbir.similar_images_reranked_v2.';
