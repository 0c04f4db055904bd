-- Revision 0008 downgrade.
alter table cbir.image drop column if exists local_pixels;
