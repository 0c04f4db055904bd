-- Queries of cbir_pg.db.locks: owner operations wait for their advisory lock with a timeout and name
-- who holds it.

-- name: try_lock
select pg_try_advisory_lock(%(key)s::bigint) as ok

-- name: try_xact_lock
select pg_try_advisory_xact_lock(%(key)s::bigint) as ok

-- name: unlock
select pg_advisory_unlock(%(key)s::bigint) as ok

-- name: dataset_key
select hashtextextended('cbir.import:' || %(name)s, 0) as key

-- name: text_key
select hashtext(%(name)s)::bigint as key

-- name: holders
-- the other sessions holding advisory lock (hi, lo) in this database (pg_locks splits a bigint key into
-- classid = high 32 bits, objid = low 32 bits)
select a.pid, coalesce(a.usename, '?') as user_name, coalesce(a.application_name, '') as application,
       coalesce(a.state, '?') as state,
       extract(epoch from now() - coalesce(a.state_change, a.backend_start))::bigint as seconds
from pg_locks l
join pg_stat_activity a on a.pid = l.pid
where l.locktype = 'advisory' and l.granted
  and l.database = (select oid from pg_database where datname = current_database())
  and l.classid::bigint = %(hi)s and l.objid::bigint = %(lo)s
  and a.pid <> pg_backend_pid()
order by a.pid

-- name: relation_blockers
-- sessions that block this one (after a lock_timeout, the sessions holding locks in this database
-- that a DDL statement waits on are the other sessions with a transaction open)
select a.pid, coalesce(a.usename, '?') as user_name, coalesce(a.application_name, '') as application,
       coalesce(a.state, '?') as state,
       extract(epoch from now() - coalesce(a.xact_start, a.backend_start))::bigint as seconds
from pg_stat_activity a
where a.datname = current_database() and a.pid <> pg_backend_pid() and a.xact_start is not null
  and a.backend_type = 'client backend'
order by a.xact_start
limit 5

-- name: watchdog_sweep
select pid, role_name, action, seconds
from cbir.reader_watchdog_v1(%(statement_limit)s::interval, %(idle_limit)s::interval)

-- name: watchdog_ready
select to_regprocedure('cbir.reader_watchdog_v1(interval, interval)') is not null as ready
