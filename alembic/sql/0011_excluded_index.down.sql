-- Undo 0011_excluded_index.sql.
drop index if exists cbir.image_excluded;
