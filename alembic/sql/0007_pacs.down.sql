-- Revision 0007 downgrade.
drop view if exists cbir.ingest_followers cascade;
drop function if exists cbir.ingest_lag_v1() cascade;
drop trigger if exists image_notify_new on cbir.image;
drop function if exists cbir.notify_new_images();
drop function if exists cbir.dicom_ref_v1(bigint[]);
alter table cbir.image drop column if exists dicom_uids;
drop table if exists cbir.ingest_follower;
drop table if exists cbir.dicom_source;
