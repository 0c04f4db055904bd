"""The real DICOM files bundled in the pydicom wheel, imported as a DICOM folder."""

from __future__ import annotations

import shutil

import pytest
from conftest import pydicom_test_files

from cbir_pg.datasets import import_dataset
from cbir_pg.db.database import Database

WANTED = ("CT_small.dcm", "MR_small.dcm", "rtplan.dcm")


def test_dicom_folder(db, conn, tmp_path):
    files = {p.name: p for p in pydicom_test_files()}
    if not all(n in files for n in WANTED):
        pytest.skip("pydicom test files not found")
    import pydicom

    root = tmp_path / "dcm"
    for n, f in files.items():  # every bundled file, one folder each
        (root / n[:-4]).mkdir(parents=True, exist_ok=True)
        shutil.copy(f, root / n[:-4] / n)
    (root / "broken.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"garbage")
    s = import_dataset(Database(db), "dicom", root, keep_paths="1", progress=False)
    got = dict(conn.execute("select uri, modality from cbir.image").fetchall())
    assert got["CT_small/CT_small.dcm"] == "CT" and got["MR_small/MR_small.dcm"] == "MR"
    assert len(got) == s.imported >= 20 and s.imported + s.error_count == len(files) + 1
    assert "rtplan/rtplan.dcm" not in got  # an RT plan has no pixels: recorded, not imported
    assert s.error_count >= 2 and "dicom_no_pixels" in s.errors
    # patient ids only as salted hashes; names nowhere
    ct = pydicom.dcmread(files["CT_small.dcm"])
    keys = [r[0] for r in conn.execute("select patient_key from cbir.patient").fetchall()]
    assert keys and all(len(k) == 64 for k in keys) and str(ct.PatientID) not in keys
    dump = str(conn.execute("select json_agg(t) from (select * from cbir.image) t").fetchone()[0])
    dump += str(conn.execute("select json_agg(t) from (select * from cbir.patient) t").fetchone()[0])
    assert str(ct.PatientName) not in dump and str(ct.StudyInstanceUID) not in dump
    sex = conn.execute(
        "select p.sex from cbir.image i join cbir.patient p on p.id = i.patient_id "
        "where i.uri = 'CT_small/CT_small.dcm'"
    ).fetchone()[0]
    assert sex == (str(ct.PatientSex) or None)
    w, h = conn.execute("select width, height from cbir.image where uri = 'CT_small/CT_small.dcm'").fetchone()
    assert (w, h) == (ct.Columns, ct.Rows)
    # images carry no label unless asked, and are not excluded for it; the bundled re-encodings of
    # MR_small (RLE, big endian, JPEG-LS lossless, ...) decode to the same pixels: duplicates
    assert set(s.excluded) <= {"duplicate", "near_duplicate"} and s.exact_duplicates >= 2
    dup_of_mr = conn.execute(
        "select count(*) from cbir.image d join cbir.image k on k.id = d.duplicate_of "
        "where k.uri like 'MR_small%%' and d.uri like 'MR_small%%'"
    ).fetchone()[0]
    assert dup_of_mr >= 2
    s2 = import_dataset(
        Database(db), "dicom", root, name="dcm_labelled", label_from="folder", keep_paths="1", progress=False
    )
    assert s2.imported == s.imported
