-- Revision 0004 downgrade: the saved cohorts (and the views and functions that read them, re-created by
-- `cbir-pg db migrate`).
drop table if exists cbir.cohort cascade;
