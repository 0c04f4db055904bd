-- Similarity-map faithfulness and relevance judgements for BI readers (role cbir_reader) and the page.
-- De-identified: no user name, no free-text reason, no patient or file; an upload's query is only a flag.

-- the latest faithfulness measurement per model and method (cbir-pg eval explain). A method is "no better
-- than random" when its insertion area minus its deletion area does not exceed the random order's.
create or replace view cbir_report.explain_faithfulness as
select distinct on (f.model, f.method)
       f.model, f.method, f.n_pairs, f.grid, f.deletion_auc, f.insertion_auc,
       f.random_deletion_auc, f.random_insertion_auc,
       (f.insertion_auc - f.deletion_auc) as score,
       (f.random_insertion_auc - f.random_deletion_auc) as random_score,
       (f.insertion_auc - f.deletion_auc) <= (f.random_insertion_auc - f.random_deletion_auc) as no_better_than_random,
       f.seconds_per_map, f.device, f.params, f.created_at
from cbir.explain_faithfulness f
order by f.model, f.method, f.created_at desc, f.id desc;
comment on view cbir_report.explain_faithfulness is
  'latest deletion/insertion areas per model and similarity-map method against a random cell order';

-- every judgement, de-identified: who judged and why are left out
create or replace view cbir_report.judgements as
select j.id as judgement_id,
       j.query_image_id,
       j.query_image_id is null as query_is_upload,
       j.neighbour_id,
       j.model,
       j.verdict,
       ql.key as query_label,
       nl.key as neighbour_label,
       case when ql.id is null or nl.id is null then null else ql.id = nl.id end as labels_match,
       case when ql.id is null or nl.id is null then null
            else (ql.id = nl.id) = (j.verdict = 'relevant') end as agrees_with_labels,
       j.created_at::date as judged_on
from cbir.judgement j
left join cbir.image qi on qi.id = j.query_image_id
left join cbir.label ql on ql.id = qi.label_id
join cbir.image ni on ni.id = j.neighbour_id
left join cbir.label nl on nl.id = ni.label_id;
comment on view cbir_report.judgements is
  'relevance judgements without user or reason: verdict, the two labels and whether the verdict agrees with them';

-- per query class: how often the radiologists' verdict agrees with "same label = relevant"
create or replace view cbir_report.judgement_agreement as
select j.query_label as label,
       count(*) as n_judgements,
       count(*) filter (where j.verdict = 'relevant') as n_relevant,
       count(*) filter (where j.labels_match) as n_same_label,
       count(*) filter (where j.agrees_with_labels) as n_agree,
       avg(j.agrees_with_labels::int)::double precision as agreement
from cbir_report.judgements j
where j.agrees_with_labels is not null
group by j.query_label
order by j.query_label;
comment on view cbir_report.judgement_agreement is
  'per query class: share of judgements whose verdict agrees with the labels (relevant iff same label)';
