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
