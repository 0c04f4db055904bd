-- Revision 0007 (alembic/versions/0007_pacs.py): PACS sources, ingest followers, new-image notifications.

create table cbir.dicom_source (
  dataset_id      int primary key references cbir.dataset(id) on delete cascade,
  url             text not null check (url ~ '^https?://[^/@]+(/|$)'),
  copy_pixels     boolean not null default true,
  last_study_date date,
  last_run_at     timestamptz
);
comment on table cbir.dicom_source is
  'a dataset imported from a PACS over DICOMweb: base URL (never credentials) and the --since last cursor';
comment on column cbir.dicom_source.last_study_date is
  'the newest StudyDate of the last complete run; --since last queries StudyDate from this day on';

create table cbir.ingest_follower (
  id               bigserial primary key,
  host             text not null,
  pid              int not null,
  models           text[] not null,
  datasets         text[],
  started_at       timestamptz not null default now(),
  heartbeat_at     timestamptz not null default now(),
  last_batch_at    timestamptz,
  embedded         bigint not null default 0,
  state            text not null default 'running' check (state in ('running', 'stopped'))
);
comment on table cbir.ingest_follower is
  'one row per cbir-pg ingest --follow process: heartbeat_at is refreshed at least every poll interval';

-- An image's DICOM reference (Study, Series, SOP Instance UID, DICOMweb server) as its own column, so a
-- reader's role can be granted it alone (the viewer link) and row-level security applies as to the image.
alter table cbir.image add column dicom_uids jsonb generated always as (extra -> 'dicom_uids') stored;
comment on column cbir.image.dicom_uids is
  'images from a PACS: {study, series, sop, date, server}; null for every other image';

-- The new-image notification (function cbir.notify_new_images and trigger image_notify_new on cbir.image)
-- is made by sql/schema/95_pacs.sql, which `cbir-pg db migrate` (and plain `alembic upgrade`) applies
-- after the revisions; no revision after this one inserts images, so none needs it before then.
