-- Result views of the embedding-space analyses (kNN classification, linear probe, index-size
-- ablation), for BI tools and `cbir-pg report`. Re-applied by `cbir-pg db migrate` after
-- 00_reset_report.sql recreated the schema. Only aggregate metrics: no patient or image data.
-- Metric rows are written by eval/results.py: metric in (f1, auprc, auroc), average in (micro, macro);
-- kNN rows have at = the chosen k; ablation rows are metric p_at_1 at 1 per (index_size, seed).

-- The six classification metrics of a run in one row (kNN and linear probe share it).
create or replace view cbir_report.classification_metrics as
select m.run_id,
       cbir_report.round4(max(m.value) filter (where m.metric = 'f1' and m.average = 'micro')) as f1_micro,
       cbir_report.round4(max(m.value) filter (where m.metric = 'f1' and m.average = 'macro')) as f1_macro,
       cbir_report.round4(max(m.value) filter (where m.metric = 'auprc' and m.average = 'micro')) as auprc_micro,
       cbir_report.round4(max(m.value) filter (where m.metric = 'auprc' and m.average = 'macro')) as auprc_macro,
       cbir_report.round4(max(m.value) filter (where m.metric = 'auroc' and m.average = 'micro')) as auroc_micro,
       cbir_report.round4(max(m.value) filter (where m.metric = 'auroc' and m.average = 'macro')) as auroc_macro
from cbir.eval_metric m
where m.metric in ('f1', 'auprc', 'auroc')
group by m.run_id;
comment on view cbir_report.classification_metrics is
  'micro/macro F1, AUPRC (average precision) and AUROC per kNN or linear-probe run';

-- A finished kNN or linear-probe run with its six metrics, its counts and whether it is the latest of its
-- kind for its model (the rows knn_results and linear_results share).
create or replace view cbir_report.classification_runs as
select r.id as run_id,
       r.kind,
       r.encoder_key as model,
       r.mode,
       r.params,
       c.f1_micro, c.f1_macro, c.auprc_micro, c.auprc_macro, c.auroc_micro, c.auroc_macro,
       r.n_queries,
       r.n_index,
       r.finished_at,
       r.id = max(r.id) over (partition by r.kind, r.encoder_key) as is_latest
from cbir.eval_run r
left join cbir_report.classification_metrics c on c.run_id = r.id
where r.kind in ('knn', 'linear') and r.finished_at is not null;
comment on view cbir_report.classification_runs is
  'finished kNN and linear-probe runs: model, parameters, micro/macro F1, AUPRC and AUROC, counts, latest';

create or replace view cbir_report.knn_results as
select c.run_id, c.model, c.mode, (c.params ->> 'k')::int as k,
       c.f1_micro, c.f1_macro, c.auprc_micro, c.auprc_macro, c.auroc_micro, c.auroc_macro,
       (select cbir_report.round4(v.value) from cbir.eval_metric v
        where v.run_id = c.run_id and v.metric = 'val_f1' and v.average = 'micro'
          and v.at = (c.params ->> 'k')::int) as val_f1_micro,
       (c.params ->> 'k_min')::int as k_min,
       (c.params ->> 'k_max')::int as k_max,
       c.params ->> 'index_splits' as index_splits,
       c.n_queries, c.n_index, c.finished_at, c.is_latest
from cbir_report.classification_runs c
where c.kind = 'knn';
comment on view cbir_report.knn_results is
  'kNN classification on the test split, k chosen on val by micro F1; AUPRC = average precision';

create or replace view cbir_report.knn_k_curve as
select r.id as run_id, r.encoder_key as model, m.at as k, cbir_report.round4(m.value) as val_f1_micro
from cbir.eval_run r
join cbir.eval_metric m on m.run_id = r.id and m.metric = 'val_f1' and m.average = 'micro'
where r.kind = 'knn' and r.finished_at is not null;
comment on view cbir_report.knn_k_curve is 'validation micro F1 of every k tried by a kNN run';

create or replace view cbir_report.linear_results as
select c.run_id, c.model, (c.params ->> 'seed')::int as seed,
       c.f1_micro, c.f1_macro, c.auprc_micro, c.auprc_macro, c.auroc_micro, c.auroc_macro,
       (c.params ->> 'epochs_run')::int as epochs_run,
       (c.params ->> 'best_epoch')::int as best_epoch,
       (c.params ->> 'stopped_early')::boolean as stopped_early,
       c.n_queries, c.n_index, c.finished_at, c.is_latest
from cbir_report.classification_runs c
where c.kind = 'linear';
comment on view cbir_report.linear_results is
  'linear probe (AdamW, early stopping on val loss) on the test split; AUPRC = average precision';

create or replace view cbir_report.ablation as
select r.id as run_id,
       r.encoder_key as model,
       m.index_size,
       m.seed,
       cbir_report.round4(m.value) as p_at_1,
       (r.params ->> 'min_class_size')::int as min_class_size,
       (r.params ->> 'queries_per_class')::int as queries_per_class,
       jsonb_array_length(coalesce(r.params -> 'classes', '[]'::jsonb)) as n_classes,
       coalesce((r.params ->> 'scaled')::boolean, false) as scaled,
       r.finished_at,
       r.id = max(r.id) over (partition by r.encoder_key) as is_latest
from cbir.eval_run r
join cbir.eval_metric m on m.run_id = r.id and m.metric = 'p_at_1'
where r.kind = 'ablation' and r.finished_at is not null;
comment on view cbir_report.ablation is
  'index-size ablation (Fig. 3B): P@1 with N random index images per class, per seed';
