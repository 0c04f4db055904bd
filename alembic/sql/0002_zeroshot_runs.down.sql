-- Undo zeroshot_runs.sql: zero-shot runs are deleted, then the kind is refused.
delete from cbir.eval_run where kind = 'zeroshot';
alter table cbir.eval_run
  drop constraint eval_run_kind_check,
  add constraint eval_run_kind_check check (kind in ('retrieval', 'knn', 'linear', 'ablation'));
