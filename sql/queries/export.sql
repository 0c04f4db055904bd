-- Queries of eval/export.py: stored evaluation runs, per-query neighbours and metrics as flat tables.
-- %(runs)s is null for every run, else an array of run ids; %(model)s is null for every model.

-- name: run_ids
-- the runs an export selects (checked before anything is written)
select r.id from cbir.eval_run r
where (%(runs)s::bigint[] is null or r.id = any(%(runs)s::bigint[]))
  and (%(model)s::text is null or r.encoder_key = %(model)s::text)

-- name: runs
select r.id as run_id, r.kind, r.encoder_key as model, r.mode, r.n_queries, r.n_index,
       r.params::text as params, r.index_params::text as index_params, r.timings::text as timings,
       r.code_version, r.started_at, r.finished_at
from cbir.eval_run r
where (%(runs)s::bigint[] is null or r.id = any(%(runs)s::bigint[]))
  and (%(model)s::text is null or r.encoder_key = %(model)s::text)
order by r.id

-- name: neighbours
-- One row per query image and rank: the stored top-N of retrieval runs, in long format.
select q.run_id, q.query_image_id, ql.key as query_label, n.rank::int as rank,
       n.image_id as neighbour_image_id, nl.key as neighbour_label,
       q.similarities[n.rank]::double precision as similarity, q.relevant[n.rank] as relevant,
       q.class_index_size
from cbir.eval_query q
join cbir.eval_run r on r.id = q.run_id
cross join lateral unnest(q.neighbours) with ordinality as n(image_id, rank)
left join cbir.label ql on ql.id = q.label_id
left join cbir.image ni on ni.id = n.image_id
left join cbir.label nl on nl.id = ni.label_id
where (%(runs)s::bigint[] is null or q.run_id = any(%(runs)s::bigint[]))
  and (%(model)s::text is null or r.encoder_key = %(model)s::text)
order by q.run_id, q.query_image_id, n.rank

-- name: metrics
select m.run_id, r.kind, r.encoder_key as model, r.mode, m.metric, m.at, m.average, m.index_size,
       m.seed, m.value
from cbir.eval_metric m
join cbir.eval_run r on r.id = m.run_id
where (%(runs)s::bigint[] is null or m.run_id = any(%(runs)s::bigint[]))
  and (%(model)s::text is null or r.encoder_key = %(model)s::text)
order by m.run_id, m.metric, m.average, m.at, m.index_size, m.seed
