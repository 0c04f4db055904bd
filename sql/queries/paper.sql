-- The runs that sit beside the paper's published tables (cbir_pg.eval.paper).

-- name: candidate_runs
-- Finished runs of some kinds and models whose scope holds only datasets of one kind (all datasets
-- when the run names none); retrieval runs must search test queries against the train index.
-- paper_imports: every dataset in scope was imported with --profile paper.
with runs as (
  select r.id as run_id, r.kind, r.encoder_key as model, r.mode, r.finished_at, r.n_queries,
         coalesce(r.params ->> 'profile', 'default') as profile,
         coalesce(r.params ->> 'vectors', 'computed') as vectors,
         array(select d.key from cbir.dataset d
               where jsonb_typeof(r.params -> 'datasets') is distinct from 'array'
                  or d.key in (select jsonb_array_elements_text(r.params -> 'datasets'))) as scope
  from cbir.eval_run r
  where r.kind = any(%(kinds)s::text[]) and r.finished_at is not null
    and r.encoder_key = any(%(models)s::text[])
    and (r.kind <> 'retrieval'
         or (coalesce(r.params -> 'query_splits', '["test"]') = '["test"]'::jsonb
             and coalesce(r.params -> 'index_splits', '["train"]') = '["train"]'::jsonb))
)
select run_id, kind, model, mode, profile, vectors, n_queries, finished_at,
       (select bool_and(coalesce(d.params ->> 'profile', 'default') = 'paper')
        from cbir.dataset d where d.key = any(runs.scope)) as paper_imports
from runs
where cardinality(scope) > 0
  and (select bool_and(d.kind = %(dataset_kind)s) from cbir.dataset d where d.key = any(runs.scope))
order by run_id desc

-- name: run_metrics
select run_id, metric, average, at, value
from cbir.eval_metric
where run_id = any(%(runs)s::bigint[]) and index_size = 0
order by run_id, metric, average, at, seed

-- name: run_neighbour_uris
-- A retrieval run's queries and ranked neighbours as image uris (for the authors' knn.csv, whose cells
-- are the split CSVs' filepaths).
select qi.uri as query,
       array(select i.uri from unnest(q.neighbours) with ordinality n(id, ord)
             join cbir.image i on i.id = n.id order by n.ord) as neighbours
from cbir.eval_query q
join cbir.image qi on qi.id = q.query_image_id
where q.run_id = %(run_id)s
order by qi.uri

-- name: run_kind
select kind, encoder_key as model from cbir.eval_run where id = %(run_id)s

-- name: any_phash
select exists (select 1 from cbir.image where phash is not null)

-- name: images_without_pixels
select count(*) from cbir.image where not local_pixels
