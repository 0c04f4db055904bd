"""Patient data (issue 8): the DICOM import of pydicom's real test files, which carry PatientName,
PatientID, birth dates and study UIDs, stores no patient name and no raw identifier anywhere; patient
keys are salted sha256 hashes; the salt lives per installation.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path

import psycopg
import pytest
from relhelp import find_values

from cbir_pg.db.database import Database

MAX_BYTES = 300_000
PLACEHOLDERS = {"anonymized", "anonymous"}
#: name parts that are ordinary words in error messages ("First-Order Prediction" is a transfer syntax)
COMMON_WORDS = {"first", "last", "name", "test"}


def _phi_files() -> dict[Path, dict[str, str]]:
    """pydicom's bundled files that carry a patient name or id: path -> the PHI values in it."""
    import pydicom
    from conftest import pydicom_test_files

    out: dict[Path, dict[str, str]] = {}
    for f in pydicom_test_files():
        if f.stat().st_size > MAX_BYTES:
            continue
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True, force=True)
        except Exception:
            continue
        phi = {
            "PatientName": str(ds.get("PatientName", "") or ""),
            "PatientID": str(ds.get("PatientID", "") or ""),
            "PatientBirthDate": str(ds.get("PatientBirthDate", "") or ""),
            "StudyInstanceUID": str(ds.get("StudyInstanceUID", "") or ""),
            "SeriesInstanceUID": str(ds.get("SeriesInstanceUID", "") or ""),
        }
        if phi["PatientName"] or phi["PatientID"]:
            out[f] = phi
    return out


def _needles(files: dict[Path, dict[str, str]]) -> list[str]:
    """Values that must be stored nowhere: names, their parts, ids, birth dates, study/series UIDs.
    Very short or purely numeric short values are left out (they occur as ordinary data)."""
    names: set[str] = set()
    ids: set[str] = set()
    for phi in files.values():
        name = phi["PatientName"]
        names.add(name)
        names.update(p for p in re.split(r"[\^=]", name) if p)
        ids.update(
            [phi["PatientID"], phi["StudyInstanceUID"], phi["SeriesInstanceUID"], phi["PatientBirthDate"]]
        )
    keep = []
    for v in names:  # a name part shorter than 5 letters ("Test", "mid") occurs as an ordinary word
        v = v.strip()
        if len(v) >= 5 and v.strip("^") and v.lower() not in PLACEHOLDERS | COMMON_WORDS:
            keep.append(v)
    for v in ids:
        v = v.strip()
        if len(v) >= 3 and not (v.isdigit() and len(v) < 5):
            keep.append(v)
    return sorted(keep)


@pytest.fixture(scope="module")
def phi_folder(tmp_path_factory) -> tuple[Path, dict[Path, dict[str, str]]]:
    files = _phi_files()
    assert len(files) >= 10, "pydicom's test files with patient data were not found"
    root = tmp_path_factory.mktemp("phi") / "scans"
    root.mkdir()
    copied = {}
    for f, phi in files.items():
        dest = root / f.name
        shutil.copyfile(f, dest)
        copied[dest] = phi
    return root, copied


def _import(dsn: str, root: Path):
    from cbir_pg.datasets.importer import import_dataset

    return import_dataset(Database(dsn), "dicom", root, name="phi_scans", keep_paths="1", progress=False)


def _salt(dsn: str) -> str:
    with psycopg.connect(dsn) as c:
        return c.execute("select value from cbir.installation where key = 'patient_salt'").fetchone()[0]


def test_no_patient_name_or_raw_identifier_is_stored(db: str, phi_folder) -> None:
    root, files = phi_folder
    summary = _import(db, root)
    assert summary.imported >= 20, "too few DICOM files imported to prove anything"
    needles = _needles(files)
    assert "CompressedSamples^CT1" in needles and "1CT1" in needles and "Lestrade" in needles
    hits = find_values(db, needles)
    assert not hits, f"patient data stored: {hits[:10]}"


def test_patient_and_study_keys_are_salted_hashes(db: str, phi_folder) -> None:
    root, files = phi_folder
    _import(db, root)
    salt = _salt(db)
    assert re.fullmatch(r"[0-9a-f]{64}", salt)
    with psycopg.connect(db) as c:
        rows = c.execute(
            """
            select i.uri, p.patient_key, s.study_key
            from cbir.image i left join cbir.patient p on p.id = i.patient_id left join cbir.study s on s.id = i.study_id
            join cbir.dataset d on d.id = i.dataset_id where d.key = 'phi_scans'
            """
        ).fetchall()
    checked = 0
    for uri, patient_key, study_key in rows:
        phi = files[root / uri]
        if phi["PatientID"]:
            expected = hashlib.sha256(f"{salt}:{phi['PatientID']}".encode()).hexdigest()
            assert patient_key == expected, f"{uri}: patient key is not sha256(salt:PatientID)"
            checked += 1
        else:
            assert patient_key is None or re.fullmatch(r"[0-9a-f]{64}", patient_key), (uri, patient_key)
        if phi["StudyInstanceUID"]:
            assert study_key == hashlib.sha256(f"{salt}:{phi['StudyInstanceUID']}".encode()).hexdigest(), uri
    assert checked >= 15


def test_salt_differs_per_installation_and_so_do_the_keys(db: str, empty_db: str, phi_folder) -> None:
    """Two installations (two freshly migrated databases) get different salts, so the same patient
    cannot be linked across them by key."""
    from cbir_pg.db.migrate import migrate

    migrate(Database(empty_db))
    assert _salt(db) != _salt(empty_db)
    root, _ = phi_folder
    keys = []
    for dsn in (db, empty_db):
        _import(dsn, root)
        with psycopg.connect(dsn) as c:
            keys.append({r[0] for r in c.execute("select patient_key from cbir.patient")})
    assert keys[0] and keys[1] and not (keys[0] & keys[1])


def test_salt_is_kept_on_remigration(db: str) -> None:
    """Re-running migrations must not change the salt: that would orphan every stored patient key."""
    from cbir_pg.db.migrate import migrate

    before = _salt(db)
    migrate(Database(db))
    assert _salt(db) == before


def test_a_salt_change_would_change_every_key() -> None:
    """The hash depends on the salt and on the id (sanity check of the stored-key contract)."""
    from cbir_pg.datasets.splits import hash_patient_id

    assert hash_patient_id("1CT1", "a" * 64) != hash_patient_id("1CT1", "b" * 64)
    assert hash_patient_id("1CT1", "a" * 64) != hash_patient_id("1CT2", "a" * 64)
    assert "1CT1" not in hash_patient_id("1CT1", "a" * 64)


# --------------------------------------------------------------------------- issue 13: paths, coded tags, salt
def _patient_foldered(root: Path, files: dict[Path, dict[str, str]]) -> tuple[Path, list[str]]:
    """The PHI files in the layout hospital exports use: a folder per patient named by name and MRN, the
    file named by the patient too (``DOE^JOHN_MRN12345678/series_1/IM_DOE_JOHN_0001.dcm``)."""
    names = []
    for i, (f, _phi) in enumerate(sorted(files.items())[:12]):
        person = f"DOE^JOHN{i}_MRN{12345670 + i}"
        dest = root / person / "series_1" / f"IM_DOE_JOHN{i}_{i:04d}.dcm"
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f, dest)
        names += [person, f"MRN{12345670 + i}", f"IM_DOE_JOHN{i}"]
    return root, names


def test_managed_copy_leaves_no_name_from_the_source_paths(db: str, phi_folder, tmp_path: Path) -> None:
    from cbir_pg.datasets.importer import import_dataset

    _, files = phi_folder
    root, names = _patient_foldered(tmp_path / "DOE^JOHN_export", files)
    # one unreadable file, so an error row is written too
    bad = root / "DOE^JOHN99_MRN12345699" / "IM_DOE_JOHN99_0001.dcm"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"DICM but not really" * 10)

    s = import_dataset(Database(db), "dicom", root, managed_copy="1", progress=False)
    assert s.dataset == "dicom_managed" and s.imported >= 8 and s.error_count >= 1
    hits = find_values(db, [*names, "DOE^JOHN", "MRN123456", "DOE_JOHN"], ignore_case=True)
    assert not hits, f"a source path name is stored: {hits[:10]}"
    with psycopg.connect(db) as c:
        root_db = c.execute("select root from cbir.dataset where key = 'dicom_managed'").fetchone()[0]
        rows = c.execute("select uri, content_hash from cbir.image").fetchall()
    from cbir_pg.images import decode_file, pixel_hash

    for uri, h in rows[:5]:  # the managed copies hold the decoded pixels, named by their hash
        assert h in uri and pixel_hash(decode_file(Path(root_db) / uri)) == h


def test_coded_attributes_are_stored_only_when_valid(db: str, tmp_path: Path) -> None:
    import pydicom
    from relhelp import pydicom_file

    from cbir_pg.datasets.importer import import_dataset

    src = pydicom.dcmread(pydicom_file("CT_small.dcm"))
    root = tmp_path / "coded"
    root.mkdir()
    cases = {
        "ok.dcm": ("PA", "CT", "CHEST"),
        "name_in_view.dcm": ("PA ANNA SMITH", "CT", "CHEST"),
        "name_in_part.dcm": ("AP", "CT", "ANNA SMITH"),
        "name_in_modality.dcm": ("LL", "SMITH", "CHEST"),
    }
    for name, (view, modality, part) in cases.items():
        ds = src.copy()
        ds.ViewPosition, ds.Modality, ds.BodyPartExamined = view, modality, part
        ds.PatientID = name
        ds.save_as(root / name)
    import_dataset(Database(db), "dicom", root, name="coded", keep_paths="1", progress=False)
    with psycopg.connect(db) as c:
        got = dict(
            (r[0], (r[1], r[2], r[3])) for r in c.execute(
                "select uri, view, modality, body_region from cbir.image"
            )
        )  # fmt: skip
    assert got == {
        "ok.dcm": ("PA", "CT", "chest"),
        "name_in_view.dcm": (None, "CT", "chest"),
        "name_in_part.dcm": ("AP", "CT", None),
        "name_in_modality.dcm": ("LL", None, "chest"),
    }
    assert not find_values(db, ["ANNA", "SMITH"], ignore_case=True)


def test_the_salt_can_come_from_outside_the_database(db: str, phi_folder, monkeypatch, tmp_path) -> None:
    """With ``CBIR_PG_SALT`` (or a salt file) the keys are hashed with it, not with the salt stored in
    the database, so a dump of the database alone cannot brute-force short patient ids."""
    root, files = phi_folder
    outside = "f" * 16 + hashlib.sha256(b"kept outside").hexdigest()
    monkeypatch.setenv("CBIR_PG_SALT", outside)
    _import(db, root)
    ids = {phi["PatientID"] for phi in files.values() if phi["PatientID"]}
    with psycopg.connect(db) as c:
        keys = {r[0] for r in c.execute("select patient_key from cbir.patient")}
        params = c.execute("select params from cbir.dataset where key = 'phi_scans'").fetchone()[0]
    stored_salt = _salt(db)
    assert len({hashlib.sha256(f"{outside}:{i}".encode()).hexdigest() for i in ids} & keys) >= 5
    assert not {hashlib.sha256(f"{stored_salt}:{i}".encode()).hexdigest() for i in ids} & keys
    assert params["salt_source"] == "external" and outside not in str(params)
    assert not find_values(db, [outside])

    # a salt file works the same way; a short salt is refused with one line
    from cbir_pg.datasets.splits import external_salt
    from cbir_pg.errors import ConfigError

    monkeypatch.delenv("CBIR_PG_SALT")
    (tmp_path / "salt").write_text(outside + "\n")
    monkeypatch.setenv("CBIR_PG_SALT_FILE", str(tmp_path / "salt"))
    assert external_salt()[0] == outside
    (tmp_path / "salt").write_text("1234\n")
    with pytest.raises(ConfigError):
        external_salt()
