-- cbir_analyst: the role the Python façade's `db.sql(...)` runs user SQL as (cbir_pg/db/readonly.py,
-- docs/python-api.md). It reads every table and view of the cbir and cbir_report schemas and nothing
-- else: no DDL, no writes, no COPY TO/FROM PROGRAM or files (those need a superuser or the
-- pg_execute_server_program / pg_*_server_files roles, which it never gets), no TEMP tables (revoked in
-- 93_guards.sql). The façade gives it LOGIN and a generated password, like cbir_web; every query runs
-- in a read-only transaction on its own connection, so a `reset role` has nothing to return to.
-- (the role itself is made in 90_roles.sql, before 92_access.sql gives it its policy on every embedding table)
grant usage on schema cbir, cbir_report to cbir_analyst;
grant select on all tables in schema cbir to cbir_analyst;
grant select on all tables in schema cbir_report to cbir_analyst;
-- Row-level security (92_access.sql) decides per role what cbir.dataset, image, patient, image_label and
-- dataset_grant rows a role sees; the owner's notebook sees what the owner sees. These policies are
-- re-created here on every migrate, after 92_access.sql dropped and re-created that file's own.
do $$
declare t text;
begin
  foreach t in array array['dataset', 'image', 'patient', 'image_label', 'dataset_grant'] loop
    if to_regclass('cbir.' || t) is not null then
      if exists (select from pg_policies where schemaname = 'cbir' and tablename = t and policyname = 'analyst_all') then
        execute format('drop policy analyst_all on cbir.%I', t);
      end if;
      execute format('create policy analyst_all on cbir.%I for select to cbir_analyst using (true)', t);
    end if;
  end loop;
end
$$;
