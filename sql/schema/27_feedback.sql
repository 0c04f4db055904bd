-- Relevance feedback: the query moved by the acting user's judgements (Rocchio 1971), beside
-- cbir.similar_images_expanded (25_fusion.sql).
--   cbir.judged_neighbours(image_id, query_hash)          the acting user's latest verdict per neighbour
--   cbir.rocchio_vector(vec, model, relevant[], not_relevant[], alpha, beta, gamma)
--   cbir.similar_images_rocchio(image_id, model, k, <filters>, alpha, beta, gamma, search)
--   cbir.similar_to_vector_rocchio(vec, query_hash, model, k, <filters>, alpha, beta, gamma, search)
--
-- Rocchio: q' = alpha q/|q| + beta mean_{r in R} v_r/|v_r| - gamma mean_{n in N} v_n/|v_n|, with R and N the
-- neighbours the acting user (current_user) judged relevant and not relevant for this query (a stored
-- image, or an upload's pixel hash), whatever model showed them; a neighbour judged several times counts
-- with its latest verdict; a neighbour without a vector in p_model is left out; an empty set adds nothing.
-- q' is searched like any vector (cbir.knn: the same filters, the same exactly-k guarantee); the
-- similarity returned is to q'. Cosine ignores the length, so q' is not normalised.

create or replace function cbir.judged_neighbours(p_image_id bigint, p_query_hash text default null)
returns table (relevant bigint[], not_relevant bigint[])
language sql stable
set search_path = pg_catalog, public, pg_temp
as $$
  with latest as (
    select distinct on (j.neighbour_id) j.neighbour_id, j.verdict
    from cbir.judgement j
    where j.username = current_user
      and ((p_image_id is not null and j.query_image_id = p_image_id)
           or (p_query_hash is not null and j.query_hash = p_query_hash))
    order by j.neighbour_id, j.created_at desc, j.id desc
  )
  select coalesce(array_agg(l.neighbour_id order by l.neighbour_id) filter (where l.verdict = 'relevant'), '{}'),
         coalesce(array_agg(l.neighbour_id order by l.neighbour_id) filter (where l.verdict = 'not_relevant'), '{}')
  from latest l
$$;

comment on function cbir.judged_neighbours(bigint, text) is
  'the acting user''s latest verdict per neighbour of a query (stored image id or upload pixel hash)';

create or replace function cbir.rocchio_vector(
  p_vec vector,
  p_model text,
  p_relevant bigint[],
  p_not_relevant bigint[],
  p_alpha double precision default 1,
  p_beta double precision default 0.75,
  p_gamma double precision default 0.15
)
returns vector
language plpgsql stable
set search_path = pg_catalog, public, pg_temp
as $$
declare
  s record;
  v_rel vector;
  v_non vector;
  v_out vector;
begin
  if p_vec is null then
    raise exception 'the query vector is null' using errcode = 'null_value_not_allowed';
  end if;
  if p_alpha is null or p_beta is null or p_gamma is null
     or p_alpha < 0 or p_beta < 0 or p_gamma < 0 or p_alpha > 100 or p_beta > 100 or p_gamma > 100
     or p_alpha = 'NaN' or p_beta = 'NaN' or p_gamma = 'NaN' then
    raise exception 'Rocchio weights must be between 0 and 100, got alpha %, beta %, gamma %',
      coalesce(p_alpha::text, 'null'), coalesce(p_beta::text, 'null'), coalesce(p_gamma::text, 'null')
      using errcode = 'invalid_parameter_value';
  end if;
  select * into s from cbir.model_vector_space(p_model);
  execute format('select avg(l2_normalize(e.embedding::vector)) filter (where e.image_id = any($1)),'
                 '       avg(l2_normalize(e.embedding::vector)) filter (where e.image_id = any($2))'
                 ' from cbir.%I e where e.image_id = any($1 || $2)', s.table_name)
    into v_rel, v_non using coalesce(p_relevant, '{}'), coalesce(p_not_relevant, '{}');
  v_out := l2_normalize(p_vec) * array_fill(p_alpha::real, array[s.dim])::vector;
  if v_rel is not null then
    v_out := v_out + v_rel * array_fill(p_beta::real, array[s.dim])::vector;
  end if;
  if v_non is not null then
    v_out := v_out - v_non * array_fill(p_gamma::real, array[s.dim])::vector;
  end if;
  return v_out;
end
$$;

comment on function cbir.rocchio_vector(vector, text, bigint[], bigint[], double precision, double precision, double precision) is
  'Rocchio: alpha q/|q| + beta mean(relevant unit vectors) - gamma mean(not-relevant unit vectors) in p_model';

-- the cohort form (cbir.similar_images_expanded_v2's shape, 25_fusion.sql): the cohort is validated once
-- by cbir.resolve_cohort and applied inside cbir.knn_v2's scan; the page uses this one
create or replace function cbir.similar_images_rocchio_v2(
  p_image_id bigint,
  p_model text,
  p_k int default 10,
  p_cohort jsonb default '{}',
  p_exclude_self boolean default true,
  p_alpha double precision default 1,
  p_beta double precision default 0.75,
  p_gamma double precision default 0.15,
  p_search text default 'auto'
)
returns table (rank int, image_id bigint, similarity double precision)
language sql stable
set search_path = pg_catalog, public, pg_temp
as $$
  select k.rank, k.image_id, k.similarity
  from (select cbir.resolve_cohort(p_cohort, cbir.check_query_image(p_image_id), coalesce(p_exclude_self, true)) as f) c
  cross join cbir.judged_neighbours(p_image_id, null) j
  cross join lateral cbir.knn_v2(
    cbir.rocchio_vector(cbir.image_vector(p_image_id, p_model), p_model, j.relevant, j.not_relevant,
                        p_alpha, p_beta, p_gamma),
    p_model, p_k, c.f, p_search) k
  order by k.rank
$$;

comment on function cbir.similar_images_rocchio_v2(bigint, text, int, jsonb, boolean, double precision, double precision, double precision, text) is
  'k most similar images of a cohort to a stored image after Rocchio feedback from the acting user''s judgements';

-- released signatures: thin wrappers (cbir.legacy_image_cohort, 20_search.sql)
create or replace function cbir.similar_images_rocchio(
  p_image_id bigint,
  p_model text,
  p_k int default 10,
  p_split text default null,
  p_dataset text default null,
  p_modality text default null,
  p_exclude_same_patient boolean default false,
  p_exclude_self boolean default true,
  p_alpha double precision default 1,
  p_beta double precision default 0.75,
  p_gamma double precision default 0.15,
  p_search text default 'auto'
)
returns table (rank int, image_id bigint, similarity double precision)
language sql stable
set search_path = pg_catalog, public, pg_temp
as $$
  select k.rank, k.image_id, k.similarity
  from cbir.similar_images_rocchio_v2(
         p_image_id, p_model, p_k, cbir.legacy_image_cohort(p_split, p_dataset, p_modality, p_exclude_same_patient),
         coalesce(p_exclude_self, false), p_alpha, p_beta, p_gamma, p_search) k
  order by k.rank
$$;

comment on function cbir.similar_images_rocchio(bigint, text, int, text, text, text, boolean, boolean, double precision, double precision, double precision, text) is
  'k most similar images to a stored image after Rocchio feedback from the acting user''s judgements';

create or replace function cbir.similar_to_vector_rocchio(
  p_vec vector,
  p_query_hash text,
  p_model text,
  p_k int default 10,
  p_split text default null,
  p_dataset text default null,
  p_modality text default null,
  p_exclude_image_id bigint default null,
  p_alpha double precision default 1,
  p_beta double precision default 0.75,
  p_gamma double precision default 0.15,
  p_search text default 'auto'
)
returns table (rank int, image_id bigint, similarity double precision)
language sql stable
set search_path = pg_catalog, public, pg_temp
as $$
  select k.rank, k.image_id, k.similarity
  from cbir.judged_neighbours(null, p_query_hash) j,
       cbir.knn(cbir.rocchio_vector(p_vec, p_model, j.relevant, j.not_relevant, p_alpha, p_beta, p_gamma),
                p_model, p_k, p_split, p_dataset, p_modality, null, p_exclude_image_id, p_search) k
  order by k.rank
$$;

comment on function cbir.similar_to_vector_rocchio(vector, text, text, int, text, text, text, bigint, double precision, double precision, double precision, text) is
  'k most similar images to an uploaded image''s vector after Rocchio feedback from the acting user''s judgements of that upload (by pixel hash)';
