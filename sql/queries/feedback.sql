-- Relevance judgements and Rocchio refinement (cbir_pg/feedback.py), run as the acting user: the table's
-- row-level security keeps each user to their own rows, and username defaults to current_user.

-- name: upsert_judgement
-- one current verdict per (user, query, neighbour, model): a new verdict replaces the old one
insert into cbir.judgement (query_image_id, query_hash, neighbour_id, model, verdict, reason)
values (%(query_image_id)s, %(query_hash)s, %(neighbour_id)s, %(model)s, %(verdict)s, %(reason)s)
on conflict on constraint judgement_one_verdict do update
  set verdict = excluded.verdict, reason = excluded.reason, created_at = now()
returning id, username, query_image_id, query_hash, neighbour_id, model, verdict, reason, created_at

-- name: delete_judgement
delete from cbir.judgement
where username = current_user and query_image_id is not distinct from %(query_image_id)s
  and query_hash is not distinct from %(query_hash)s and neighbour_id = %(neighbour_id)s and model = %(model)s

-- name: my_judgements
-- the acting user's verdicts on the neighbours of one query (any model)
select j.id, j.neighbour_id, j.model, j.verdict, j.reason, j.created_at
from cbir.judgement j
where j.username = current_user
  and ((%(query_image_id)s::bigint is not null and j.query_image_id = %(query_image_id)s)
       or (%(query_hash)s::text is not null and j.query_hash = %(query_hash)s))
order by j.created_at, j.id

-- name: similar_images_rocchio
-- the refined neighbours with what a page shows joined in (the columns of serve.sql's search_by_id)
select s.rank, s.image_id, s.similarity, f.label, f.dataset, f.split, f.modality, f.sex, f.age
from cbir.similar_images_rocchio(%(image_id)s, %(model)s, %(k)s, %(split)s, %(dataset)s, %(modality)s,
                                 %(exclude_same_patient)s, true, %(alpha)s, %(beta)s, %(gamma)s) s
cross join lateral cbir.image_facts(s.image_id) f
order by s.rank

-- name: judged_pairs
-- every judged (stored query, neighbour) pair with its verdict counts over users (the evaluation's ground
-- truth; run by a role that reads all rows: the owner or a member of cbir_judgement_reader)
select j.query_image_id, j.neighbour_id,
       count(*) filter (where j.verdict = 'relevant') as n_relevant,
       count(*) filter (where j.verdict = 'not_relevant') as n_not_relevant
from (
  select distinct on (username, query_image_id, neighbour_id) username, query_image_id, neighbour_id, verdict
  from cbir.judgement
  where query_image_id is not null
  order by username, query_image_id, neighbour_id, created_at desc, id desc
) j
group by j.query_image_id, j.neighbour_id

-- name: similar_images_rocchio_v2
-- the refined neighbours among a cohort, with what a page shows joined in (serve.sql's search_by_id)
select s.rank, s.image_id, s.similarity, f.label, f.dataset, f.split, f.modality, f.sex, f.age
from cbir.similar_images_rocchio_v2(%(image_id)s, %(model)s, %(k)s, %(cohort)s) s
cross join lateral cbir.image_facts(s.image_id) f
order by s.rank
