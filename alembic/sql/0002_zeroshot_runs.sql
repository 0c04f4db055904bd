-- Evaluation runs of kind 'zeroshot' (text-to-image retrieval and zero-shot classification, eval/zeroshot.py).
alter table cbir.eval_run
  drop constraint eval_run_kind_check,
  add constraint eval_run_kind_check check (kind in ('retrieval', 'knn', 'linear', 'ablation', 'zeroshot'));
