-- Queries of similarity maps (cbir_pg/explain.py, cbir_pg/app/serve/explain.py) and their faithfulness
-- measurement (eval/explain.py).

-- name: latest_faithfulness
select model, method, n_pairs, grid, deletion_auc, insertion_auc, random_deletion_auc, random_insertion_auc,
       no_better_than_random, seconds_per_map, device
from cbir_report.explain_faithfulness
where model = %(model)s and method = %(method)s

-- name: latest_faithfulness_all
select model, method, n_pairs, grid, deletion_auc, insertion_auc, random_deletion_auc, random_insertion_auc,
       no_better_than_random, seconds_per_map, device
from cbir_report.explain_faithfulness
where model = %(model)s
order by method

-- name: insert_faithfulness
insert into cbir.explain_faithfulness (model, config_hash, method, params, n_pairs, grid, deletion_auc,
  insertion_auc, random_deletion_auc, random_insertion_auc, seconds_per_map, device, code_version)
values (%(model)s, %(config_hash)s, %(method)s, %(params)s, %(n_pairs)s, %(grid)s, %(deletion_auc)s,
  %(insertion_auc)s, %(random_deletion_auc)s, %(random_insertion_auc)s, %(seconds_per_map)s, %(device)s,
  %(code_version)s)
returning id

-- name: benchmark_pairs
-- (query, top-1 neighbour) pairs for the faithfulness benchmark: test queries against the train index,
-- spread over the labels (every image_id-th by a stride), with the neighbour found by the SQL search API
select q.id as query_id, n.image_id as neighbour_id, n.similarity
from (
  select i.id, row_number() over (partition by i.label_id order by i.id) as r
  from cbir.image i
  join {table} e on e.image_id = i.id
  where i.split = 'test' and i.label_id is not null and not i.excluded
) q
cross join lateral cbir.similar_images(q.id, %(model)s, 1, 'train') n
where q.r <= %(per_label)s
order by q.r, q.id
limit %(pairs)s
