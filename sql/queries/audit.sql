-- Queries `cbir-pg audit` runs (the owner's connection; readers cannot read cbir.audit_log).

-- name: rows
select a.id, a.at, a.actor, a.auth, host(a.address) as address, a.method, a.path, a.action, a.status,
       a.image_ids, a.filters
from cbir.audit_log a
where (%(since)s::timestamptz is null or a.at >= %(since)s)
  and (%(until)s::timestamptz is null or a.at < %(until)s)
  and (%(actor)s::text is null or a.actor = %(actor)s)
order by a.id
limit %(limit)s
