-- Evaluation result views for BI tools (schema cbir_report, read by role cbir_reader; grants in 90_roles.sql).
-- They expose run parameters, metrics and harmonised class names only: no patient, study or image rows.
-- Re-applied by `cbir-pg db migrate` (00_reset_report.sql drops and recreates the schema first).

-- Metrics in the views are rounded to 4 decimals, so a dashboard shows them as they are (the exact
-- values stay in cbir.eval_metric and cbir.eval_class_metric, and in `cbir-pg eval export`).
create or replace function cbir_report.round4(x double precision) returns double precision
language sql immutable parallel safe
set search_path = pg_catalog
as $$ select round(x::numeric, 4)::double precision $$;
comment on function cbir_report.round4(double precision) is 'a metric rounded to 4 decimals for display';

-- Every evaluation run (retrieval, knn, linear, ablation) with its parameters, counts and timings.
-- scope: the datasets searched (a comma list; "all" for old runs that named none), then index split(s) ->
-- query split(s).
create or replace view cbir_report.eval_runs as
select r.id as run_id,
       r.kind,
       r.encoder_key as model,
       r.mode,
       (r.params ->> 'ef_search_effective')::int as ef_search,
       -- the datasets the run covered (params.scope_datasets, eval/scope.py), so the same image sets are
       -- one scope; runs from before it was recorded: the datasets asked for, or "all"
       coalesce((select string_agg(d, ',' order by d) from jsonb_array_elements_text(
                   case when jsonb_typeof(r.params -> 'scope_datasets') = 'array'
                          and jsonb_array_length(r.params -> 'scope_datasets') > 0 then r.params -> 'scope_datasets'
                        when jsonb_typeof(r.params -> 'datasets') = 'array' then r.params -> 'datasets' end) d),
                'all')
         || ':' || coalesce((select string_agg(s, ',' order by s) from jsonb_array_elements_text(
                   case when jsonb_typeof(r.params -> 'index_splits') = 'array' then r.params -> 'index_splits' end) s), '*')
         || '->' || coalesce((select string_agg(s, ',' order by s) from jsonb_array_elements_text(
                   case when jsonb_typeof(r.params -> 'query_splits') = 'array' then r.params -> 'query_splits' end) s), '*')
         as scope,
       -- the methodological profile (cbir_pg/profiles.py): 'paper' rows follow the paper's published code
       coalesce(r.params ->> 'profile', 'default') as profile,
       -- whether the vectors were computed here or imported (embeddings import-h5)
       coalesce(r.params ->> 'vectors', 'computed') as vectors,
       r.n_queries,
       r.n_index,
       (r.timings ->> 'queries_per_s')::double precision as queries_per_s,
       (r.timings ->> 'total_s')::double precision as total_s,
       r.params,
       r.index_params,
       r.metrics,
       r.timings,
       r.code_version,
       r.started_at,
       r.finished_at,
       -- every non-excluded image of the run's scope had a vector when it ran (null: not recorded)
       r.all_embedded
from cbir.eval_run r;
comment on view cbir_report.eval_runs is 'every evaluation run: parameters, index parameters, counts, timings, code version, vector coverage';

-- The latest finished retrieval run of each model, mode (ann | exact), scope, profile and vector source.
create or replace view cbir_report.latest_retrieval_run as
select distinct on (model, mode, scope, profile, vectors) run_id, model, mode, scope, profile, vectors, finished_at
from cbir_report.eval_runs
where kind = 'retrieval' and finished_at is not null
order by model, mode, scope, profile, vectors, finished_at desc, run_id desc;
comment on view cbir_report.latest_retrieval_run is 'latest finished retrieval run per model, mode, scope, profile and vector source';

-- One metric of a run (P@N, recall@N or the P@N difference dP; micro or macro) at N = 1, 3, 5 and 10, a
-- column each: the pivot leaderboard and ann_quality read.
create or replace view cbir_report.metric_at_n as
select m.run_id,
       m.metric,
       m.average,
       cbir_report.round4(max(m.value) filter (where m.at = 1)) as at1,
       cbir_report.round4(max(m.value) filter (where m.at = 3)) as at3,
       cbir_report.round4(max(m.value) filter (where m.at = 5)) as at5,
       cbir_report.round4(max(m.value) filter (where m.at = 10)) as at10
from cbir.eval_metric m
where m.metric in ('P', 'recall', 'dP')
group by m.run_id, m.metric, m.average;
comment on view cbir_report.metric_at_n is 'P, recall and dP of a run at N = 1, 3, 5, 10 (micro or macro), one row per run, metric and average';

-- model x P@N micro/macro of the latest run (the paper's Table 2).
create or replace view cbir_report.leaderboard as
select l.model,
       l.mode,
       l.scope,
       l.profile,
       l.vectors,
       l.run_id,
       r.n_queries,
       r.n_index,
       r.ef_search,
       mi.at1 as p1_micro, mi.at3 as p3_micro, mi.at5 as p5_micro, mi.at10 as p10_micro,
       ma.at1 as p1_macro, ma.at3 as p3_macro, ma.at5 as p5_macro, ma.at10 as p10_macro,
       r.finished_at
from cbir_report.latest_retrieval_run l
join cbir_report.eval_runs r on r.run_id = l.run_id
left join cbir_report.metric_at_n mi on mi.run_id = l.run_id and mi.metric = 'P' and mi.average = 'micro'
left join cbir_report.metric_at_n ma on ma.run_id = l.run_id and ma.metric = 'P' and ma.average = 'macro';
comment on view cbir_report.leaderboard is 'model x P@1/3/5/10 micro and macro, latest retrieval run per model, mode, scope, profile (paper = comparable with the paper) and vector source (computed | imported)';

-- Per class P@N of the latest runs: class, kind (anatomical | pathological), index class size.
-- P is null for a class with no index image (its precision is undefined).
create or replace view cbir_report.class_precision as
select l.model,
       l.mode,
       l.scope,
       l.run_id,
       lab.key as class,
       lab.kind,
       lab.modality,
       lab.region,
       lab.finding,
       max(cm.n_queries) as n_queries,
       max(cm.class_index_size) as class_index_size,
       cbir_report.round4(max(nullif(cm.value, 'NaN')) filter (where cm.metric = 'P' and cm.at = 1)) as p1,
       cbir_report.round4(max(nullif(cm.value, 'NaN')) filter (where cm.metric = 'P' and cm.at = 3)) as p3,
       cbir_report.round4(max(nullif(cm.value, 'NaN')) filter (where cm.metric = 'P' and cm.at = 5)) as p5,
       cbir_report.round4(max(nullif(cm.value, 'NaN')) filter (where cm.metric = 'P' and cm.at = 10)) as p10
from cbir_report.latest_retrieval_run l
join cbir.eval_class_metric cm on cm.run_id = l.run_id
join cbir.label lab on lab.id = cm.label_id
group by l.model, l.mode, l.scope, l.run_id, lab.key, lab.kind, lab.modality, lab.region, lab.finding;
comment on view cbir_report.class_precision is 'per class P@1/3/5/10 of the latest retrieval runs, with kind and index class size';

-- ANN against exact search, one row per ann run that was compared (--compare-exact): recall of the
-- top N, the difference in P@N (ann - exact), ef_search, HNSW build parameters and speeds.
create or replace view cbir_report.ann_quality as
select r.run_id,
       r.model,
       r.scope,
       (r.params ->> 'exact_run_id')::bigint as exact_run_id,
       r.ef_search,
       (r.index_params -> 'hnsw' ->> 'm')::int as hnsw_m,
       (r.index_params -> 'hnsw' ->> 'ef_construction')::int as hnsw_ef_construction,
       (r.params ->> 'plan_uses_index')::boolean as plan_uses_index,
       r.n_queries,
       r.n_index,
       rc.at1 as recall1, rc.at3 as recall3, rc.at5 as recall5, rc.at10 as recall10,
       di.at1 as dp1_micro, di.at3 as dp3_micro, di.at5 as dp5_micro, di.at10 as dp10_micro,
       da.at1 as dp1_macro, da.at3 as dp3_macro, da.at5 as dp5_macro, da.at10 as dp10_macro,
       r.queries_per_s as ann_queries_per_s,
       e.queries_per_s as exact_queries_per_s,
       r.finished_at
from cbir_report.eval_runs r
left join cbir_report.eval_runs e on e.run_id = (r.params ->> 'exact_run_id')::bigint
left join cbir_report.metric_at_n rc on rc.run_id = r.run_id and rc.metric = 'recall' and rc.average = 'micro'
left join cbir_report.metric_at_n di on di.run_id = r.run_id and di.metric = 'dP' and di.average = 'micro'
left join cbir_report.metric_at_n da on da.run_id = r.run_id and da.metric = 'dP' and da.average = 'macro'
where r.kind = 'retrieval' and r.mode = 'ann' and r.params ? 'exact_run_id' and r.finished_at is not null;
comment on view cbir_report.ann_quality is 'ANN (HNSW) against exact search: recall@N, P@N difference, ef_search, index parameters';
