-- De-identified views for dashboards (schema cbir_report, read by role cbir_reader; docs/bi.md).
-- Patients appear only as bands: sex and a 10-year age band ('40-49', '90+' for 90 and over).
-- No patient key, study key, file path or dataset root is ever shown.

grant execute on function cbir_report.round4(double precision) to cbir_reader;

create or replace function cbir_report.age_band(age real) returns text
language sql immutable parallel safe
set search_path = pg_catalog
as $$
  select case
    when age is null then null
    when age >= 90 then '90+'
    else (floor(age / 10) * 10)::int || '-' || (floor(age / 10) * 10 + 9)::int
  end
$$;
comment on function cbir_report.age_band(real) is 'a 10-year age band (90 and over pooled as 90+): the only age a dashboard sees';
grant execute on function cbir_report.age_band(real) to cbir_reader;

-- The stored top-N of every retrieval run in long format: one row per query image and rank.
-- same_label is the relevance flag the run's P@N counted (the neighbour has the query's label).
create or replace view cbir_report.neighbours as
select q.run_id as run,
       r.encoder_key as model,
       r.mode,
       qd.key as dataset,
       qi.split,
       q.query_image_id as query_image,
       n.rank::int as rank,
       n.image_id as neighbour_image,
       cbir_report.round4(q.similarities[n.rank]) as similarity,
       ql.key as query_label,
       nl.key as neighbour_label,
       q.relevant[n.rank] as same_label,
       nd.key as neighbour_dataset,
       ni.split as neighbour_split,
       qp.sex as query_sex,
       cbir_report.age_band(qp.age) as query_age_band,
       np.sex as neighbour_sex,
       cbir_report.age_band(np.age) as neighbour_age_band
from cbir.eval_query q
join cbir.eval_run r on r.id = q.run_id
join cbir.image qi on qi.id = q.query_image_id
join cbir.dataset qd on qd.id = qi.dataset_id
left join cbir.patient qp on qp.id = qi.patient_id
left join cbir.label ql on ql.id = q.label_id
cross join lateral unnest(q.neighbours) with ordinality as n(image_id, rank)
left join cbir.image ni on ni.id = n.image_id
left join cbir.dataset nd on nd.id = ni.dataset_id
left join cbir.patient np on np.id = ni.patient_id
left join cbir.label nl on nl.id = ni.label_id
where r.kind = 'retrieval'
  -- the caller's datasets only (row-level security, sql/schema/92_access.sql): the view is owned by the
  -- owner and would otherwise show every dataset's images to every reader
  and qi.dataset_id in (select cbir.visible_dataset_ids())
  and (ni.id is null or ni.dataset_id in (select cbir.visible_dataset_ids()));
comment on view cbir_report.neighbours is
  'de-identified long-format neighbours of every retrieval run: query, rank, neighbour, similarity, labels, same-label flag; patients only as sex and 10-year age band; only the datasets granted to the caller';

-- Saved cohorts (cbir.cohort): their names, filters and sizes, and their images as ids, for dashboards
-- that slice results by cohort. A filter may name a patient id (an internal serial, not a patient key).
create or replace view cbir_report.cohorts as
select c.name, c.description, c.filter, cardinality(c.image_ids) as n_listed_images, c.created_by, c.created_at
from cbir.cohort c;
comment on view cbir_report.cohorts is 'saved cohorts (cbir.cohort): name, filter, how many listed image ids, who saved it';

create or replace view cbir_report.cohort_images as
select c.name as cohort, x.image_id
from cbir.cohort c cross join lateral unnest(c.image_ids) as x(image_id)
-- the caller's datasets only, like cbir_report.neighbours
where x.image_id in (select i.id from cbir.image i where i.dataset_id in (select cbir.visible_dataset_ids()));
comment on view cbir_report.cohort_images is
  'the image ids listed in each saved cohort (one row per cohort and image), of the datasets granted to the caller';
grant select on cbir_report.cohorts, cbir_report.cohort_images to cbir_reader;
