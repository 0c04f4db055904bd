-- Queries the embedding-space analyses run (eval/knn.py, eval/linear.py, eval/ablation.py,
-- eval/report.py, eval/results.py). {table} is the model's embedding table, cbir.embedding_<key>,
-- filled in by cbir_pg.db.identifiers. Images that are excluded or have no single label never count.

-- name: split_images
-- The labelled, non-excluded images of one split that have a vector, in id order; with their vectors
-- (halfvec is cast to vector) for the linear probe when %(vectors)s, else embedding is null.
select i.id, i.label_id, case when %(vectors)s then e.embedding::vector end as embedding
from cbir.image i
join {table} e on e.image_id = i.id
join cbir.dataset d on d.id = i.dataset_id
where i.split = %(split)s
  and (%(datasets)s::text[] is null or d.key = any(%(datasets)s::text[]))
  and not i.excluded
  and i.label_id is not null
order by i.id

-- name: encoder_exists
select to_regclass('cbir.' || table_name) is not null as has_table from cbir.encoder where key = %(model)s

-- name: ablation_classes
-- Per class: the number of index images (with a vector) and of candidate query images.
with idx as (
  select i.label_id, count(*) as n_index
  from cbir.image i
  join {table} e on e.image_id = i.id
  join cbir.dataset d on d.id = i.dataset_id
  where i.split = any(%(index_splits)s::text[])
    and (%(datasets)s::text[] is null or d.key = any(%(datasets)s::text[]))
    and not i.excluded and i.label_id is not null
  group by i.label_id
), qry as (
  select i.label_id, count(*) as n_query
  from cbir.image i
  join {table} e on e.image_id = i.id
  join cbir.dataset d on d.id = i.dataset_id
  where i.split = %(query_split)s
    and (%(datasets)s::text[] is null or d.key = any(%(datasets)s::text[]))
    and not i.excluded and i.label_id is not null
  group by i.label_id
)
select idx.label_id, l.key, idx.n_index, coalesce(qry.n_query, 0) as n_query
from idx
join cbir.label l on l.id = idx.label_id
left join qry using (label_id)
order by idx.n_index desc, idx.label_id

-- name: ablation_queries
-- The fixed query set: per class, the first %(per_class)s query-split images in md5 order. It does
-- not depend on the seed, so every index size and seed is measured on the same queries.
select id, label_id
from (
  select i.id, i.label_id,
         row_number() over (partition by i.label_id order by md5('query:' || i.id::text), i.id) as rn
  from cbir.image i
  join {table} e on e.image_id = i.id
  join cbir.dataset d on d.id = i.dataset_id
  where i.split = %(query_split)s
    and i.label_id = any(%(labels)s::int[])
    and (%(datasets)s::text[] is null or d.key = any(%(datasets)s::text[]))
    and not i.excluded
) q
where rn <= %(per_class)s
order by label_id, id

-- name: ablation_index_subset
-- N random index images per class for one seed: a deterministic shuffle by md5(seed, id). Subsets are
-- nested: the images of size N are among those of every larger size for the same seed.
select id, label_id
from (
  select i.id, i.label_id,
         row_number() over (partition by i.label_id order by md5(%(seed)s::text || ':' || i.id::text), i.id) as rn
  from cbir.image i
  join {table} e on e.image_id = i.id
  join cbir.dataset d on d.id = i.dataset_id
  where i.split = any(%(index_splits)s::text[])
    and i.label_id = any(%(labels)s::int[])
    and (%(datasets)s::text[] is null or d.key = any(%(datasets)s::text[]))
    and not i.excluded
) s
where rn <= %(size)s
order by id

-- name: tsne_sample
-- A seeded random sample of labelled images with their vectors and the facets to colour by.
select i.id, e.embedding::vector as embedding,
       coalesce(i.modality, l.modality, '?') as modality,
       coalesce(i.body_region, l.region, '?') as region,
       coalesce(l.key, '?') as label
from cbir.image i
join {table} e on e.image_id = i.id
left join cbir.label l on l.id = i.label_id
where not i.excluded
order by md5(%(seed)s::text || ':' || i.id::text), i.id
limit %(n)s

-- name: grid_queries
-- Sampled test queries for the qualitative grids: seeded, one class after the other.
select id, label_id
from (
  select i.id, i.label_id,
         row_number() over (partition by i.label_id order by md5(%(seed)s::text || ':grid:' || i.id::text)) as rn
  from cbir.image i
  join {table} e on e.image_id = i.id
  where i.split = %(split)s and not i.excluded and i.label_id is not null
) q
order by rn, md5(%(seed)s::text || ':' || label_id::text)
limit %(n)s

-- name: label_keys
select id, key, kind from cbir.label order by id

-- name: report_models
-- Models with an embedding table, in key order.
select key from cbir.encoder where to_regclass('cbir.' || table_name) is not null order by key

-- name: view_exists
select to_regclass(%(name)s) is not null

-- name: leaderboard
select * from cbir_report.leaderboard

-- name: report_knn_linear
-- Latest kNN and linear-probe test metrics per model (Table 4 layout), from the report views.
select 'knn' as method, model, k, f1_micro, f1_macro, auprc_micro, auprc_macro, auroc_micro, auroc_macro
from cbir_report.knn_results where is_latest
union all
select 'linear', model, null, f1_micro, f1_macro, auprc_micro, auprc_macro, auroc_micro, auroc_macro
from cbir_report.linear_results where is_latest
order by 2, 1

-- name: report_class_p1
-- Per-class P@1 against index class size (Fig. 3A), from the latest kNN run of the model.
select l.key, l.kind, c.class_index_size, c.n_queries, c.value
from cbir_report.knn_results r
join cbir.eval_class_metric c on c.run_id = r.run_id and c.metric = 'p_at_1'
join cbir.label l on l.id = c.label_id
where r.is_latest and r.model = %(model)s
order by c.class_index_size

-- name: report_ablation
-- Ablation points (Fig. 3B): the latest ablation run per model, mean and spread over seeds.
select model, index_size, avg(p_at_1) as p_at_1, coalesce(stddev_samp(p_at_1), 0) as sd, count(*) as n_seeds
from cbir_report.ablation
where is_latest
group by model, index_size
order by model, index_size

-- name: report_zeroshot
-- Latest zero-shot runs (text-to-image P@N mean over classes, zero-shot accuracy), from the report views.
select model, mode, template, scope, n_classes, n_images, p1_mean, p3_mean, p5_mean, p10_mean, accuracy,
       balanced_accuracy, run_id
from cbir_report.zeroshot
order by model, mode, template

-- name: report_zeroshot_class
select model, class, prompt, n_images, p1, p5, p10, accuracy, run_id
from cbir_report.zeroshot_class
order by model, run_id, class
