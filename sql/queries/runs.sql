-- The one block of SQL that writes and reads evaluation runs (cbir_pg.eval.runs), for every kind of
-- run: retrieval, knn, linear, ablation, zeroshot.

-- name: insert_run
-- all_embedded: every image of the run's datasets and splits had a vector (cbir_pg.eval.scope; null: not known)
insert into cbir.eval_run (kind, encoder_key, mode, params, index_params, code_version, all_embedded)
values (%(kind)s, %(model)s, %(mode)s, %(params)s, %(index_params)s, %(code_version)s, %(all_embedded)s)
returning id, started_at

-- name: finish_run
-- timings always carry total_s (cbir_report.eval_runs.total_s); started_at: when the work began
update cbir.eval_run
set n_queries = %(n_queries)s, n_index = %(n_index)s, metrics = %(metrics)s, timings = %(timings)s,
    params = params || %(params)s, finished_at = clock_timestamp(),
    started_at = coalesce(%(started_at)s::timestamptz, started_at)
where id = %(run_id)s

-- name: merge_params
update cbir.eval_run set params = params || %(params)s where id = %(run_id)s

-- name: copy_eval_query
copy cbir.eval_query (run_id, query_image_id, label_id, class_index_size, neighbours, relevant, similarities)
from stdin (format binary)

-- name: insert_metric
insert into cbir.eval_metric (run_id, metric, at, average, index_size, seed, value)
values (%(run_id)s, %(metric)s, %(at)s, %(average)s, %(index_size)s, %(seed)s, %(value)s)

-- name: insert_class_metric
insert into cbir.eval_class_metric (run_id, label_id, metric, at, n_queries, class_index_size, value)
values (%(run_id)s, %(label_id)s, %(metric)s, %(at)s, %(n_queries)s, %(class_index_size)s, %(value)s)

-- name: run_queries
select query_image_id, coalesce(label_id, -1) as label_id, class_index_size, neighbours, relevant, similarities
from cbir.eval_query
where run_id = %(run_id)s
order by query_image_id

-- name: run_metrics
select metric, at, average, value from cbir.eval_metric where run_id = %(run_id)s order by metric, average, at

-- name: latest_runs
select run_id, model, mode, ef_search, n_queries, n_index, finished_at
from cbir_report.eval_runs r
where kind = %(kind)s and finished_at is not null
  and run_id in (select run_id from cbir_report.latest_retrieval_run)
order by model, mode

-- name: leaderboard
select * from cbir_report.leaderboard order by model, mode, scope, profile, vectors
