-- Undo 0009_explain_and_judgements.sql. The role cbir_judgement_reader is cluster-wide (other databases
-- of the server may use it) and is kept, like the roles revision 0001 creates.
drop table if exists cbir.judgement;
drop table if exists cbir.explain_faithfulness;
