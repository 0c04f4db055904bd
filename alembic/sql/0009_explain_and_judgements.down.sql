-- Undo 0009_explain_and_judgements.sql: the report views over the two tables (sql/schema/60_feedback_report.sql)
-- and the Rocchio functions that read cbir.judgement (27_feedback.sql) go first, then the tables. The role
-- cbir_judgement_reader is cluster-wide (other databases of the server may use it) and is kept, like the
-- roles revision 0001 creates.
drop view if exists cbir_report.judgement_agreement;
drop view if exists cbir_report.judgements;
drop view if exists cbir_report.explain_faithfulness;
drop function if exists cbir.similar_images_rocchio(bigint, text, int, text, text, text, boolean, boolean, double precision, double precision, double precision, text);
drop function if exists cbir.similar_to_vector_rocchio(vector, text, text, int, text, text, text, bigint, double precision, double precision, double precision, text);
drop function if exists cbir.judged_neighbours(bigint, text);
drop table if exists cbir.judgement;
drop table if exists cbir.explain_faithfulness;
