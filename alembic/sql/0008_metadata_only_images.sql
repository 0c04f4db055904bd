-- Revision 0008 (alembic/versions/0008_metadata_only_images.py): images imported without their pixels.
alter table cbir.image add column local_pixels boolean not null default true;
comment on column cbir.image.local_pixels is
  'false: imported with --metadata-only (labels, split, patient from the split CSVs; no file on this machine): search, the page and the report say "pixels not available"';
