-- Revision 0005 downgrade: the policies of sql/schema/92_access.sql first (they read the grant table).
do $$
declare p record;
begin
  for p in select schemaname, tablename, policyname from pg_policies where schemaname = 'cbir' loop
    execute format('drop policy %I on %I.%I', p.policyname, p.schemaname, p.tablename);
  end loop;
end
$$;
drop view if exists cbir_report.neighbours cascade;
drop view if exists cbir_report.eval_runs cascade;
drop function if exists cbir.visible_dataset_ids() cascade;
alter table cbir.dataset disable row level security;
alter table cbir.image disable row level security;
alter table cbir.patient disable row level security;
alter table cbir.image_label disable row level security;
drop table if exists cbir.audit_log;
drop function if exists cbir.audit_log_append_only();
drop table if exists cbir.dataset_grant;
