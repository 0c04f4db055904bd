-- Grants for relevance judgements and similarity-map faithfulness (after 90_roles.sql made cbir_web).
-- the page (cbir_web) writes its users' judgements; row-level security keeps each user to their own rows
grant select, insert, update, delete on cbir.judgement to cbir_web;
grant select on cbir.explain_faithfulness to cbir_web;
