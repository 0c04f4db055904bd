-- name: latest_fresh_run
-- The newest finished evaluation run of a kind for a model that is newer than every stored embedding.
select r.id
from cbir.eval_run r
where r.encoder_key = %(model)s
  and r.kind = %(kind)s
  and r.finished_at is not null
  and r.finished_at >= coalesce((select max(e.created_at) from {table} e), '-infinity'::timestamptz)
order by r.finished_at desc, r.id desc
limit 1;

-- name: benchmark_images
select count(*)
from cbir.image i
join cbir.dataset d on d.id = i.dataset_id
where d.key = any(%(keys)s) and not i.excluded;

-- name: latest_ann_quality
select recall1, recall3, recall5, recall10
from cbir_report.ann_quality
where model = %(model)s
order by finished_at desc, run_id desc
limit 1;

-- name: latest_knn
select run_id, k, f1_micro, f1_macro, auprc_micro, auprc_macro, auroc_micro, auroc_macro
from cbir_report.knn_results
where model = %(model)s and is_latest;

-- name: benchmark_missing_vectors
-- non-excluded benchmark images without a vector of a model
select count(*)
from cbir.image i
join cbir.dataset d on d.id = i.dataset_id
where d.key = any(%(keys)s) and not i.excluded
  and not exists (select 1 from {table} e where e.image_id = i.id);

-- name: other_datasets
select count(*) from cbir.dataset d where not (d.key = any(%(keys)s));

-- name: latest_fresh_fused_run
-- The newest finished fused retrieval run newer than every stored vector of both member models.
select r.id
from cbir.eval_run r
where r.encoder_key = %(model)s
  and r.kind = 'retrieval'
  and r.finished_at is not null
  and r.finished_at >= greatest(coalesce((select max(e.created_at) from {table_a} e), '-infinity'::timestamptz),
                                coalesce((select max(e.created_at) from {table_b} e), '-infinity'::timestamptz))
order by r.finished_at desc, r.id desc
limit 1;

-- name: embedding_table_exists
-- whether a model has an embedding table (cbir.embedding_<key>)
select to_regclass('cbir.' || quote_ident('embedding_' || %(model)s)) is not null;

-- name: latest_ann_run
-- a model's newest finished ANN retrieval run (the fused row is compared with it, query by query)
select run_id from cbir_report.latest_retrieval_run
where model = %(model)s and mode = 'ann'
order by finished_at desc, run_id desc
limit 1;
