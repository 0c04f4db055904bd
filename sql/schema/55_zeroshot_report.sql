-- Zero-shot results of image-text models (eval/zeroshot.py, `cbir-pg eval zeroshot`): text-to-image
-- retrieval P@N (one text query per class, mean over classes) and zero-shot classification accuracy.
-- Aggregates and class names only: no patient or image rows.

-- one row per model, mode and template: its latest zero-shot run
create or replace view cbir_report.zeroshot as
select distinct on (r.encoder_key, r.mode, r.params ->> 'template', r.params -> 'query_splits', r.params -> 'datasets')
       r.id as run_id,
       r.encoder_key as model,
       r.mode,
       r.params ->> 'template' as template,
       coalesce(r.params ->> 'datasets', 'all') || ':' || coalesce(r.params -> 'query_splits' ->> 0, '*') as scope,
       r.n_queries as n_classes,
       r.n_index as n_images,
       (select m.value from cbir.eval_metric m where m.run_id = r.id and m.metric = 'P' and m.at = 1) as p1_mean,
       (select m.value from cbir.eval_metric m where m.run_id = r.id and m.metric = 'P' and m.at = 3) as p3_mean,
       (select m.value from cbir.eval_metric m where m.run_id = r.id and m.metric = 'P' and m.at = 5) as p5_mean,
       (select m.value from cbir.eval_metric m where m.run_id = r.id and m.metric = 'P' and m.at = 10) as p10_mean,
       (select m.value from cbir.eval_metric m where m.run_id = r.id and m.metric = 'accuracy' and m.average = 'micro') as accuracy,
       (select m.value from cbir.eval_metric m where m.run_id = r.id and m.metric = 'accuracy' and m.average = 'macro') as balanced_accuracy,
       r.finished_at
from cbir.eval_run r
where r.kind = 'zeroshot' and r.finished_at is not null
order by r.encoder_key, r.mode, r.params ->> 'template', r.params -> 'query_splits', r.params -> 'datasets',
         r.finished_at desc, r.id desc;
comment on view cbir_report.zeroshot is
  'latest zero-shot run per model, mode and template: mean text-to-image P@N over classes, zero-shot accuracy';

-- per class: its prompt, P@N of its text query and its zero-shot accuracy, for the runs above
create or replace view cbir_report.zeroshot_class as
select z.run_id,
       z.model,
       z.mode,
       z.template,
       lab.key as class,
       r.params -> 'prompts' ->> lab.key as prompt,
       max(cm.class_index_size) as n_images,
       max(nullif(cm.value, 'NaN')) filter (where cm.metric = 'P' and cm.at = 1) as p1,
       max(nullif(cm.value, 'NaN')) filter (where cm.metric = 'P' and cm.at = 3) as p3,
       max(nullif(cm.value, 'NaN')) filter (where cm.metric = 'P' and cm.at = 5) as p5,
       max(nullif(cm.value, 'NaN')) filter (where cm.metric = 'P' and cm.at = 10) as p10,
       max(nullif(cm.value, 'NaN')) filter (where cm.metric = 'accuracy') as accuracy
from cbir_report.zeroshot z
join cbir.eval_run r on r.id = z.run_id
join cbir.eval_class_metric cm on cm.run_id = z.run_id
join cbir.label lab on lab.id = cm.label_id
group by z.run_id, z.model, z.mode, z.template, lab.key, r.params;
comment on view cbir_report.zeroshot_class is
  'per class prompt, text-to-image P@N and zero-shot accuracy of the latest zero-shot runs';
