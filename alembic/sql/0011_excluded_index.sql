-- Revision 0011 (alembic/versions/0011_excluded_index.py): the excluded images, as a partial index (empty
-- while no image is excluded), so a search can ask "is any image excluded?" at the cost of one page.
create index if not exists image_excluded on cbir.image (id) where excluded;
