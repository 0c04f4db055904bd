-- Grants for relevance judgements and similarity-map faithfulness (after 90_roles.sql and 92_access.sql).
-- Every person is a login in cbir_reader, and `cbir-pg serve` runs their queries under `set local role`
-- (cbir_web is itself a member of cbir_reader): they write and read judgements in their own name only
-- (row-level security on cbir.judgement, alembic revision 0009); members of cbir_judgement_reader read all.
grant select, insert, update, delete on cbir.judgement to cbir_reader;
grant select on cbir.explain_faithfulness to cbir_reader;
