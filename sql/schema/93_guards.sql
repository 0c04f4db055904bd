-- A reader cannot deny service to the owner (issue 22, docs/reliability.md).
--   * advisory locks: `db migrate`, `datasets import` and the first `ingest` of a model serialise on
--     advisory locks (cbir_pg/db/locks.py). Only the owner and cbir_worker may take them; a reader, the
--     web role and the façade's analyst role cannot, so none of them can hold such a lock for ever.
--   * TEMP: a reader's temporary table is not bounded by temp_file_limit (it is a relation, not a temp
--     file); only the owner may create them in this database.
-- Needs a superuser (pg_catalog functions, the database's ACL); an external server migrated by a less
-- privileged owner keeps going with a notice.
do $$
begin
  revoke execute on function
    pg_catalog.pg_advisory_lock(bigint), pg_catalog.pg_advisory_lock(integer, integer),
    pg_catalog.pg_advisory_lock_shared(bigint), pg_catalog.pg_advisory_lock_shared(integer, integer),
    pg_catalog.pg_advisory_xact_lock(bigint), pg_catalog.pg_advisory_xact_lock(integer, integer),
    pg_catalog.pg_advisory_xact_lock_shared(bigint), pg_catalog.pg_advisory_xact_lock_shared(integer, integer),
    pg_catalog.pg_try_advisory_lock(bigint), pg_catalog.pg_try_advisory_lock(integer, integer),
    pg_catalog.pg_try_advisory_lock_shared(bigint), pg_catalog.pg_try_advisory_lock_shared(integer, integer),
    pg_catalog.pg_try_advisory_xact_lock(bigint), pg_catalog.pg_try_advisory_xact_lock(integer, integer),
    pg_catalog.pg_try_advisory_xact_lock_shared(bigint),
    pg_catalog.pg_try_advisory_xact_lock_shared(integer, integer)
  from public;
  grant execute on function
    pg_catalog.pg_advisory_xact_lock(bigint), pg_catalog.pg_try_advisory_xact_lock(bigint),
    pg_catalog.pg_advisory_lock(bigint), pg_catalog.pg_try_advisory_lock(bigint)
  to cbir_worker;
  execute format('revoke temporary on database %I from public', current_database());
exception when insufficient_privilege then
  raise notice 'cbir-pg: advisory-lock and TEMP revokes need a superuser; skipped (%)', sqlerrm;
end
$$;

-- The reader watchdog (cbir_pg/db/watchdog.py). A reader's statement_timeout and
-- idle_in_transaction_session_timeout are role settings it can lift itself (`set statement_timeout = 0`,
-- `alter role current_user reset all`). The owner's watchdog calls this every few seconds: it cancels a
-- reader's statement that has run longer than the limit of cbir.reader_limits_v1() and ends a reader's
-- session that has sat idle in a transaction longer than its limit, whatever the session set. Readers are
-- the LOGIN members of cbir_reader (the web role among them); superusers never. The limits can be
-- passed (tests, a stricter site); returns what it did.
create or replace function cbir.reader_watchdog_v1(
  statement_limit interval default null,
  idle_limit interval default null
)
returns table (pid integer, role_name text, action text, seconds double precision)
language plpgsql
volatile
set search_path = pg_catalog
as $fn$
declare
  st interval := coalesce(statement_limit,
    (select l.value::interval from cbir.reader_limits_v1() l where l.setting = 'statement_timeout'));
  idle interval := coalesce(idle_limit,
    (select l.value::interval from cbir.reader_limits_v1() l where l.setting = 'idle_in_transaction_session_timeout'));
  r record;
begin
  for r in
    select a.pid as apid, a.usename::text as uname, a.state as astate,
           extract(epoch from now() - a.query_start) as q_secs,
           extract(epoch from now() - a.state_change) as s_secs
    from pg_stat_activity a
    join pg_roles m on m.oid = a.usesysid
    where a.backend_type = 'client backend' and a.pid <> pg_backend_pid()
      and not m.rolsuper and m.rolname <> 'cbir_reader'
      and pg_has_role(m.oid, 'cbir_reader', 'MEMBER')
  loop
    if r.astate = 'active' and r.q_secs > extract(epoch from st) then
      perform pg_cancel_backend(r.apid);
      pid := r.apid; role_name := r.uname; action := 'cancelled a statement'; seconds := r.q_secs;
      return next;
    elsif r.astate like 'idle in transaction%' and r.s_secs > extract(epoch from idle) then
      perform pg_terminate_backend(r.apid);
      pid := r.apid; role_name := r.uname; action := 'ended a session idle in a transaction'; seconds := r.s_secs;
      return next;
    end if;
  end loop;
end
$fn$;
revoke all on function cbir.reader_watchdog_v1(interval, interval) from public;
comment on function cbir.reader_watchdog_v1(interval, interval) is
  'cancel reader statements and end idle reader transactions over the limits of cbir.reader_limits_v1(), whatever the session set; run by the owner''s watchdog';
