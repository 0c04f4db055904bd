"""The PACS service against a real Orthanc with its DICOMweb plugin (one per module, started here):
DICOMweb import, ``--since last``, credentials, a PACS killed mid-import, the C-STORE listener with a
real SCU, the follower, the end-to-end path Orthanc → listener → follower → ``cbir.similar_images``, the
viewer link and a full ``pg_dump`` holding no patient name, birth date or id."""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
import pytest
from dbhelp import fetch_all
from pacs_helpers import (
    PASSWORD,
    ROUTE_PREFIX,
    USER,
    Orthanc,
    free_port,
    medmnist_studies,
    patient_needles,
    to_bytes,
    wait_port,
)

from cbir_pg.db.database import Database

pytestmark = [pytest.mark.real_data, pytest.mark.slow]


# --------------------------------------------------------------------------- the PACS
@pytest.fixture(scope="module")
def orthanc(tmp_path_factory, medmnist_dir: Path):
    """One Orthanc for the module holding pydicom's bundled files and 16 MedMNIST images as Secondary
    Capture (8 BreastMNIST studies of 2024-01-10, 8 PneumoniaMNIST studies of 2024-02-20)."""
    import pydicom
    import requests
    from conftest import medmnist_file, pydicom_test_files

    o = Orthanc(tmp_path_factory.mktemp("orthanc"), listener_port=free_port())
    o.start()
    o.headers = {}  # SOP Instance UID -> header of every instance Orthanc accepted
    for f in pydicom_test_files():
        try:
            o.upload(f.read_bytes())
        except requests.HTTPError:  # Orthanc refuses a few of the deliberately broken files
            continue
        ds = pydicom.dcmread(f, stop_before_pixels=True, force=True)
        o.headers[str(ds.SOPInstanceUID)] = ds
    o.breast, o.pneumonia = (
        medmnist_studies(
            medmnist_file(medmnist_dir, flag), prefix=prefix, n=8, study_date=day, first_birth_year=born
        )
        for flag, prefix, day, born in (
            ("breastmnist", "BREAST", "20240110", 1931),
            ("pneumoniamnist", "PNEU", "20240220", 1951),
        )
    )
    for ds in o.breast + o.pneumonia:
        o.upload(to_bytes(ds))
        o.headers[str(ds.SOPInstanceUID)] = ds
    yield o
    o.stop()


@pytest.fixture
def pacs_env(monkeypatch) -> dict[str, str]:
    monkeypatch.setenv("CBIR_PG_PACS_USER", USER)
    monkeypatch.setenv("CBIR_PG_PACS_PASSWORD", PASSWORD)
    return dict(os.environ)


def _images(dsn: str, dataset: str) -> dict[str, dict]:
    """SOP Instance UID -> row of the dataset's images."""
    rows = fetch_all(
        dsn,
        "select i.extra -> 'dicom_uids' as uids, i.modality, i.uri, i.label_id, i.id "
        "from cbir.image i join cbir.dataset d on d.id = i.dataset_id where d.key = %s",
        (dataset,),
    )
    out = {
        r[0]["sop"]: {"uids": r[0], "modality": r[1], "uri": r[2], "label_id": r[3], "id": r[4]} for r in rows
    }
    assert len(out) == len(rows), "an instance was imported twice"
    return out


def _vectors(dsn: str, model: str = "tiny_cnn") -> int:
    with psycopg.connect(dsn) as c:
        if not c.execute("select to_regclass(%s) is not null", (f"cbir.embedding_{model}",)).fetchone()[0]:
            return 0
        return c.execute(f"select count(*) from cbir.embedding_{model}").fetchone()[0]


def _import(dsn: str, url: str, **kw):
    from cbir_pg.pacs.dicomweb import import_dicomweb

    return import_dicomweb(Database(dsn), url, **kw)


# --------------------------------------------------------------------------- DICOMweb import
def test_import_is_keyed_by_sop_uid_and_a_rerun_imports_nothing(db: str, orthanc, pacs_env) -> None:
    s = _import(db, orthanc.url, name="pacs")
    got = _images(db, "pacs")
    assert s.imported == len(got) >= 30
    assert set(got) <= set(orthanc.headers)
    mm = {str(d.SOPInstanceUID) for d in orthanc.breast + orthanc.pneumonia}
    assert mm <= set(got), "every MedMNIST Secondary Capture is imported"
    for sop, row in got.items():  # the reference is the UIDs, the file a salted hash in the managed store
        h = orthanc.headers[sop]
        assert row["uids"]["study"] == str(h.StudyInstanceUID) and row["uids"]["series"] == str(
            h.SeriesInstanceUID
        )
        assert re.fullmatch(r"[0-9a-f]{2}/[0-9a-f]{32}\.png", row["uri"]) and sop not in row["uri"]
    assert s.errors.get("dicom_not_an_image", 0) >= 3  # SR, RT plan/struct/dose: skipped with their reason
    with psycopg.connect(db) as c:
        url, last = c.execute(
            "select s.url, s.last_study_date from cbir.dicom_source s join cbir.dataset d on d.id = s.dataset_id"
        ).fetchone()
        status = c.execute("select import_status from cbir.dataset where key = 'pacs'").fetchone()[0]
    assert url == orthanc.url and last.strftime("%Y%m%d") == "20240220" and status == "complete"
    again = _import(db, orthanc.url, name="pacs")
    assert again.imported == 0 and _images(db, "pacs").keys() == got.keys()


def test_modality_study_and_date_filters(db: str, orthanc, pacs_env) -> None:
    _import(db, orthanc.url, name="ct_only", modality="CT")
    ct = _images(db, "ct_only")
    assert ct and {r["modality"] for r in ct.values()} == {"CT"}
    study = str(orthanc.breast[3].StudyInstanceUID)
    _import(db, orthanc.url, name="one_study", study_uid=study)
    assert set(_images(db, "one_study")) == {str(orthanc.breast[3].SOPInstanceUID)}
    _import(db, orthanc.url, name="february", study_date="20240201-20240229")
    assert set(_images(db, "february")) == {str(d.SOPInstanceUID) for d in orthanc.pneumonia}
    # a reader granted one dataset reads that dataset's DICOM references only (row-level security)
    import uuid

    role = f"r_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(db, autocommit=True) as c:
        c.execute(f"create role {role} nologin in role cbir_reader")
        try:
            c.execute(
                "insert into cbir.dataset_grant (dataset_id, role_name) select id, %s from cbir.dataset"
                " where key = 'one_study'",
                (role,),
            )
            ids = [r[0] for r in c.execute("select id from cbir.image")]
            assert len(c.execute("select * from cbir.dicom_ref_v1(%s)", (ids,)).fetchall()) == len(ids)
            c.execute(f"set role {role}")
            refs = c.execute("select sop, server from cbir.dicom_ref_v1(%s)", (ids,)).fetchall()
            c.execute("reset role")
        finally:
            c.execute("delete from cbir.dataset_grant where role_name = %s", (role,))
            c.execute(f"drop role {role}")
    assert refs == [(str(orthanc.breast[3].SOPInstanceUID), orthanc.url)]


def test_since_last_continues_from_the_last_complete_run(db: str, orthanc, pacs_env, medmnist_dir) -> None:
    from conftest import medmnist_file

    _import(db, orthanc.url, name="pacs", study_date="20240101-")
    before = set(_images(db, "pacs"))
    old, new = medmnist_studies(
        medmnist_file(medmnist_dir, "breastmnist"),
        prefix="LATE",
        n=2,
        study_date="20240305",
        first_birth_year=1971,
    )
    old.StudyDate = "20000101"  # archived late: older than the cursor
    ids = [orthanc.upload(to_bytes(d))["ID"] for d in (old, new)]
    try:
        s = _import(db, orthanc.url, name="pacs", since="last")
        assert s.imported == 1 and set(_images(db, "pacs")) == before | {str(new.SOPInstanceUID)}
        with psycopg.connect(db) as c:
            assert (
                str(c.execute("select last_study_date from cbir.dicom_source").fetchone()[0]) == "2024-03-05"
            )
    finally:
        for i in ids:
            orthanc.delete_instance(i)


def test_credentials_come_from_env_or_a_private_file_and_are_never_shown(
    db: str, orthanc, monkeypatch, tmp_path: Path, caplog
) -> None:
    from cbir_pg.errors import ConfigError

    caplog.set_level(logging.DEBUG)
    study = str(orthanc.pneumonia[0].StudyInstanceUID)
    for k in ("CBIR_PG_PACS_USER", "CBIR_PG_PACS_PASSWORD", "CBIR_PG_PACS_TOKEN", "CBIR_PG_PACS_SECRET_FILE"):
        monkeypatch.delenv(k, raising=False)
    with pytest.raises(ConfigError, match="refused the credentials .HTTP 401"):
        _import(db, orthanc.url, name="creds", study_uid=study)
    with pytest.raises(ConfigError, match="carries credentials"):
        _import(db, orthanc.url.replace("http://", f"http://{USER}:{PASSWORD}@"), name="creds")
    secret = tmp_path / "pacs.secret"
    secret.write_text(f"user={USER}\npassword={PASSWORD}\n")
    secret.chmod(0o644)
    monkeypatch.setenv("CBIR_PG_PACS_SECRET_FILE", str(secret))
    with pytest.raises(ConfigError, match="chmod 600") as exc:
        _import(db, orthanc.url, name="creds", study_uid=study)
    assert PASSWORD not in str(exc.value)
    secret.chmod(0o600)
    s = _import(db, orthanc.url, name="creds", study_uid=study)
    assert s.imported == 1
    assert PASSWORD not in caplog.text
    from pacs_helpers import free_port as _  # noqa: F401  (the helpers hold the only copy of the password)

    with psycopg.connect(db) as c:
        dump = str(c.execute("select json_agg(d) from cbir.dataset d").fetchone()[0])
        dump += str(c.execute("select json_agg(s) from cbir.dicom_source s").fetchone()[0])
    assert PASSWORD not in dump and USER not in dump


def test_pacs_killed_mid_import_loses_nothing_and_the_rerun_completes(
    db: str, clone_db, template_db: str, orthanc, pacs_env
) -> None:
    """Orthanc is killed (SIGKILL) right after the 5th instance is retrieved: the import stops with a
    clear error, what was committed stays, the dataset stays 'importing'; Orthanc restarts and the same
    call imports exactly what was missing."""
    from cbir_pg.pacs.dicomweb import PacsUnavailable

    reference = clone_db(template_db)
    _import(reference, orthanc.url, name="pacs")
    expected = set(_images(reference, "pacs"))

    class KillAt(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage() == "retrieved instance 5":
                orthanc.kill()

    logger = logging.getLogger("cbir_pg.pacs.dicomweb")
    handler, level = KillAt(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        with pytest.raises(PacsUnavailable, match="run the same command again"):
            _import(db, orthanc.url, name="pacs", batch_size=2)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        orthanc.start()
    partial = set(_images(db, "pacs"))
    assert 2 <= len(partial) < len(expected) and partial <= expected
    with psycopg.connect(db) as c:
        assert (
            c.execute("select import_status from cbir.dataset where key = 'pacs'").fetchone()[0]
            == "importing"
        )
    s = _import(db, orthanc.url, name="pacs")
    assert set(_images(db, "pacs")) == expected and s.imported == len(expected) - len(partial)


def test_no_copy_keeps_only_references_and_fetches_the_pixels_on_use(db: str, orthanc, pacs_env) -> None:
    from cbir_pg.images import DecodeError, decode_file
    from cbir_pg.ingest.worker import run_ingest

    _import(db, orthanc.url, name="refs", study_date="20240201-20240229", no_copy=True)
    got = _images(db, "refs")
    assert len(got) == 8 and all(r["uri"].endswith(".dcmref") for r in got.values())
    files = [f for f in (Path(os.environ["CBIR_PG_HOME"]) / "images" / "refs").rglob("*") if f.is_file()]
    assert {f.suffix for f in files} == {".dcmref"} and len(files) == 8  # no pixels at rest
    assert all(str(d.PatientName) not in f.read_text() for f in files for d in orthanc.pneumonia)
    with psycopg.connect(db) as c:
        assert c.execute("select copy_pixels from cbir.dicom_source").fetchone()[0] is False
    s = run_ingest(Database(db), "tiny_cnn", device="cpu", loader_workers=0, progress=False)
    assert s.embedded == 8 and not s.errors  # fetched from Orthanc, and their pixel hashes matched
    orthanc.kill()
    try:
        with pytest.raises(DecodeError, match="cannot fetch it from"):
            decode_file(files[0])
    finally:
        orthanc.start()


def test_labels_are_attached_later_by_study_or_sop_uid(db: str, orthanc, pacs_env, tmp_path: Path) -> None:
    from cbir_pg.errors import ConfigError
    from cbir_pg.pacs.labels import attach_labels

    _import(db, orthanc.url, name="pacs", study_date="20240101-")
    assert all(r["label_id"] is None for r in _images(db, "pacs").values())  # a PACS has no labels
    by_study = tmp_path / "studies.csv"
    rows = [f"{d.StudyInstanceUID},US/breast/normal" for d in orthanc.breast] + ["1.2.3.4.5,US/breast/normal"]
    by_study.write_text("study_instance_uid,label\n" + "\n".join(rows) + "\n")
    s = attach_labels(Database(db), "pacs", by_study)
    assert (s.level, s.images, s.unmatched, s.labels) == ("study", 8, 1, {"US/breast/normal": 8})
    by_sop = tmp_path / "sops.csv"
    two = [str(d.SOPInstanceUID) for d in orthanc.breast[:2]]
    by_sop.write_text("sop_instance_uid,label\n" + "".join(f"{u},US/breast/malignant\n" for u in two))
    for _ in range(2):  # replacing, and idempotent
        s = attach_labels(Database(db), "pacs", by_sop)
        assert (s.images, s.unmatched) == (2, 0)
    with psycopg.connect(db) as c:
        got = dict(
            c.execute(
                "select i.extra -> 'dicom_uids' ->> 'sop', string_agg(l.key, ',') from cbir.image i "
                "join cbir.image_label il on il.image_id = i.id join cbir.label l on l.id = il.label_id "
                "where l.id = i.label_id group by 1"
            ).fetchall()
        )
    assert got == {str(d.SOPInstanceUID): ("US/breast/malignant" if str(d.SOPInstanceUID) in two else "US/breast/normal")
                   for d in orthanc.breast}  # fmt: skip
    bad = tmp_path / "bad.csv"
    bad.write_text(f"sop_instance_uid,label\n{two[0]},US/breast/normal\n{two[0]},US/breast/malignant\n")
    with pytest.raises(ConfigError, match="two labels"):
        attach_labels(Database(db), "pacs", bad)


# --------------------------------------------------------------------------- the C-STORE listener
def _scu_send(port: int, datasets: list, calling: str = "SENDER", called: str = "CBIRPG", between=None):
    from pynetdicom import AE, StoragePresentationContexts

    ae = AE(ae_title=calling)
    ae.requested_contexts = StoragePresentationContexts
    assoc = ae.associate("127.0.0.1", port, ae_title=called)
    if not assoc.is_established:
        return None
    statuses = []
    for i, ds in enumerate(datasets):
        st = assoc.send_c_store(ds)
        statuses.append(int(st.Status) if st else None)
        if between is not None:
            between(i)
    assoc.release()
    return statuses


def _pydicom(name: str):
    import pydicom

    return pydicom.dcmread(Path(pydicom.__file__).parent / "data" / "test_files" / name)


def test_listener_imports_what_an_allowed_scu_sends_and_records_malformed_instances(db: str) -> None:
    from cbir_pg.pacs.listener import Listener

    lst = Listener(Database(db), dataset="received", port=0, allowed_aets=["SENDER"], bind="127.0.0.1")
    lst.start()
    stop = threading.Event()
    t = threading.Thread(target=lst.serve, args=(stop,), kwargs={"idle": 0.2})
    t.start()
    try:
        assert _scu_send(lst.port, [_pydicom("CT_small.dcm")], calling="INTRUDER") is None  # refused
        truncated = _pydicom("MR_small.dcm")
        truncated.SOPInstanceUID = "1.2.826.0.1.3680043.8.498.999"
        truncated.PixelData = truncated.PixelData[:100]
        sent = [_pydicom("CT_small.dcm"), _pydicom("MR_small.dcm"), truncated, _pydicom("CT_small.dcm")]
        assert _scu_send(lst.port, sent) == [0, 0, 0, 0]
    finally:
        stop.set()
        t.join(timeout=120)
    assert not t.is_alive()
    got = _images(db, "received")
    assert set(got) == {
        str(_pydicom("CT_small.dcm").SOPInstanceUID),
        str(_pydicom("MR_small.dcm").SOPInstanceUID),
    }
    with psycopg.connect(db) as c:
        errors = c.execute(
            "select e.reason, e.source from cbir.error e join cbir.dataset d on d.id = e.dataset_id where d.key = 'received'"
        ).fetchall()
    assert len(errors) == 1 and errors[0][1].startswith("sop:"), errors
    assert lst.summary.received == 4 and lst.summary.associations == 1
    assert not list(lst.spool.glob("*")), "the spool is emptied once imported"


def test_listen_command_finishes_the_association_in_progress_on_sigterm(db: str, cli_env) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "cbir_pg", "--dsn", db, "dicom", "listen", "--port", str(port),
         "--bind", "127.0.0.1", "--dataset", "pushed", "--allow-aet", "SENDER"],
        env=cli_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        wait_port(port, 60)
        a, b = _pydicom("CT_small.dcm"), _pydicom("MR_small.dcm")
        statuses = _scu_send(port, [a, b], between=lambda i: i == 0 and proc.send_signal(signal.SIGTERM))
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert statuses == [0, 0] and proc.returncode == 0, out
    assert "2 instances received, 2 imported" in out
    assert set(_images(db, "pushed")) == {str(a.SOPInstanceUID), str(b.SOPInstanceUID)}


# --------------------------------------------------------------------------- the follower
def test_follower_polls_when_no_notification_comes_and_stops_cleanly(db: str, orthanc, pacs_env) -> None:
    """With the notification trigger disabled, the polling fallback still embeds new images; the stop
    event ends the follower normally and marks its row stopped."""
    from cbir_pg.ingest.follow import follow, follower_status

    with psycopg.connect(db, autocommit=True) as c:
        c.execute("alter table cbir.image disable trigger image_notify_new")
    stop = threading.Event()
    result = {}
    t = threading.Thread(
        target=lambda: result.update(
            s=follow(Database(db), ["tiny_cnn"], stop=stop, poll_interval=0.5, device="cpu", batch_size=8)
        )
    )
    t.start()
    try:
        _import(db, orthanc.url, name="polled", study_date="20240201-20240229")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            n = _vectors(db)
            if n == 8:
                break
            time.sleep(0.3)
        rows = follower_status(Database(db))
    finally:
        stop.set()
        t.join(timeout=60)
    assert n == 8 and result["s"].embedded == {"tiny_cnn": 8} and result["s"].notifications == 0
    assert rows[0].state == "running" and rows[0].heartbeat_age_s < 60 and rows[0].model == "tiny_cnn"
    assert follower_status(Database(db))[0].state == "stopped"


def _searchable(dsn: str, sop: str) -> int | None:
    """The image id of instance ``sop`` once it has a vector and cbir.similar_images answers for it."""
    with psycopg.connect(dsn) as c:
        row = c.execute(
            "select i.id from cbir.image i where i.extra -> 'dicom_uids' ->> 'sop' = %s", (sop,)
        ).fetchone()
        if not row:
            return None
        embedded = c.execute(
            "select exists (select 1 from cbir.embedding_tiny_cnn where image_id = %s)", (row[0],)
        ).fetchone()[0]
        if (
            embedded
            and c.execute("select image_id from cbir.similar_images(%s, 'tiny_cnn', 5)", (row[0],)).fetchall()
        ):
            return row[0]
    return None


def _viewer_views(dsn: str, home: Path, image_id: int) -> tuple[dict, dict, str]:
    """The API's image info and neighbours and the image page, with a viewer URL template set, logged in
    with the one-time link (as `cbir-pg serve` prints it)."""
    from fastapi.testclient import TestClient

    from cbir_pg.app.serve import build_app
    from cbir_pg.app.serve.auth import AuthConfig, new_login_token

    os.environ["CBIR_PG_VIEWER_URL"] = "http://viewer.example/ohif/viewer?StudyInstanceUIDs={study}&sop={sop}"
    try:
        auth = AuthConfig(login_token=new_login_token())
        app, store = build_app(dsn, home, auth=auth)
        with TestClient(app, base_url="http://127.0.0.1") as client:
            r = client.get(f"/login?token={auth.login_token}", follow_redirects=False)
            assert r.status_code == 303, r.text[:300]
            info = client.get(f"/api/images/{image_id}").json()
            near = client.get(f"/api/images/{image_id}/similar", params={"model": "tiny_cnn", "k": 3}).json()
            page = client.get(f"/images/{image_id}").text
        store.close()
    finally:
        del os.environ["CBIR_PG_VIEWER_URL"]
    return info, near, page


def test_an_instance_stored_into_orthanc_is_searchable_without_anyone_running_a_command(
    db: str, orthanc, pacs_env, cli_env, medmnist_dir
) -> None:
    """Orthanc forwards (Lua, C-STORE) to `cbir-pg dicom listen`, whose import notifies `cbir-pg ingest
    --follow` (polling only every 120 s, so the notification is what wakes it); the instance is then
    returned by cbir.similar_images and linked to the viewer on the API. The time is measured and
    printed, not asserted."""
    from conftest import medmnist_file

    from cbir_pg.index import build_index

    _import(db, orthanc.url, name="pacs", study_date="20240101-")
    env = {**cli_env, **pacs_env, "CBIR_PG_HOME": cli_env["CBIR_PG_HOME"]}
    common = [sys.executable, "-m", "cbir_pg", "--dsn", db]
    follower = subprocess.Popen(
        common + ["ingest", "--follow", "-m", "tiny_cnn", "--device", "cpu", "--poll-interval", "120"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    listener = subprocess.Popen(
        common + ["dicom", "listen", "--port", str(orthanc.listener_port), "--bind", "127.0.0.1",
                  "--dataset", "routed", "--allow-aet", "ORTHANC"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        wait_port(orthanc.listener_port, 60)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:  # the follower's first pass embeds the import
            if _vectors(db) == 16:
                break
            time.sleep(0.5)
        build_index(Database(db), "tiny_cnn", progress=False, recall_queries=0)  # HNSW online from here
        (ds,) = medmnist_studies(
            medmnist_file(medmnist_dir, "pneumoniamnist"), prefix=ROUTE_PREFIX, n=1, study_date="20240401",
            first_birth_year=1981,
        )  # fmt: skip
        sop = str(ds.SOPInstanceUID)
        started = time.monotonic()
        orthanc_id = orthanc.upload(to_bytes(ds))["ID"]
        found = None
        while time.monotonic() - started < 100 and found is None:
            found = _searchable(db, sop)
            if found is None:
                time.sleep(0.2)
        seconds = time.monotonic() - started
        print(f"\nPACS end to end: stored into Orthanc -> returned by cbir.similar_images in {seconds:.1f} s")
        assert found is not None, "the routed instance never became searchable (poll interval not reached)"
        orthanc.delete_instance(orthanc_id)
        # the API and the page link it back to the PACS's viewer
        info, near, page = _viewer_views(db, Path(cli_env["CBIR_PG_HOME"]), found)
        assert info["viewer_url"] == (
            f"http://viewer.example/ohif/viewer?StudyInstanceUIDs={ds.StudyInstanceUID}&sop={sop}"
        )
        assert all(h["viewer_url"] and "StudyInstanceUIDs=" in h["viewer_url"] for h in near["neighbours"])
        assert "open in viewer" in page
    finally:
        for p in (listener, follower):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        outs = [p.communicate(timeout=120)[0] for p in (listener, follower)]
    assert listener.returncode == 0 and follower.returncode == 0, outs


# --------------------------------------------------------------------------- no patient data at rest
def test_pg_dump_of_default_dicom_imports_holds_no_patient_name_birth_date_or_id(
    db: str, orthanc, pacs_env, tmp_path: Path
) -> None:
    """A DICOM folder foldered and named by patient (default import), the whole PACS over DICOMweb and
    instances pushed to the listener: a full pg_dump holds none of the names, birth dates and ids of
    their headers and folder names, nor the PACS password."""
    import shutil

    import pydicom
    from conftest import pydicom_test_files

    from cbir_pg.datasets import import_dataset
    from cbir_pg.db.server import bin_dir
    from cbir_pg.pacs.listener import Listener

    root, needles = tmp_path / "export", set()
    for i, f in enumerate(pydicom_test_files()[:20]):
        person = f"DOE^JOHN{i}_MRN{12345670 + i}"
        dest = root / person / "series_1" / f"IM_DOE_JOHN{i}_{i:04d}.dcm"
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f, dest)
        needles |= {person, f"MRN{12345670 + i}", f"IM_DOE_JOHN{i}", f"DOE^JOHN{i}"}
        needles |= set(patient_needles(pydicom.dcmread(f, stop_before_pixels=True, force=True)))
    s = import_dataset(Database(db), "dicom", root, progress=False)
    assert s.imported >= 8
    _import(db, orthanc.url, name="pacs")
    for ds in orthanc.headers.values():
        needles |= set(patient_needles(ds))
    lst = Listener(Database(db), dataset="received", port=0, bind="127.0.0.1")
    lst.start()
    stop = threading.Event()
    t = threading.Thread(target=lst.serve, args=(stop,), kwargs={"idle": 0.2})
    t.start()
    pushed = [_pydicom("CT_small.dcm"), _pydicom("MR_small.dcm")]
    try:
        assert _scu_send(lst.port, pushed) == [0, 0]
    finally:
        stop.set()
        t.join(timeout=120)
    for ds in pushed:
        needles |= set(patient_needles(ds))
    needles |= {PASSWORD, "BREAST^SYNTH00", "BREASTID0000", "PNEUID0007", "19310120"}
    dump = subprocess.run(
        [str(bin_dir() / "pg_dump"), "--dbname", db], check=True, capture_output=True, text=True
    ).stdout
    assert "dicom_uids" in dump and len(dump) > 10_000
    text = re.sub(r"\b[0-9a-f]{16,64}\b", "", dump)  # hashes are not plain text: a name cannot hide in one
    hits = sorted(n for n in needles if n in text)
    assert len(needles) > 60 and not hits, f"patient data in the dump: {hits}"


# --------------------------------------------------------------------------- docs/pacs.md
REPO = Path(__file__).resolve().parents[2]


def walk_block() -> str:
    text = (REPO / "docs" / "pacs.md").read_text(encoding="utf-8")
    after = text.split("<!-- walk", 1)[1]
    return after.split("```bash\n", 1)[1].split("\n```", 1)[0]


def test_the_documented_walk_runs_against_orthanc(db: str, orthanc, cli_env, medmnist_dir, tmp_path) -> None:
    """docs/pacs.md's walk, run as written by bash -euo pipefail: credentials file, migrate, DICOMweb
    import and --since last, follower and listener in the background, a modality storing a new study
    into Orthanc (pynetdicom's storescu), waiting until it is embedded, labels, status, SIGTERM."""
    from conftest import medmnist_file

    (new,) = medmnist_studies(
        medmnist_file(medmnist_dir, "breastmnist"), prefix=ROUTE_PREFIX, n=1, study_date="20240501",
        first_birth_year=1991,
    )  # fmt: skip
    (tmp_path / "new.dcm").write_bytes(to_bytes(new))
    (tmp_path / "labels.csv").write_text(
        "study_instance_uid,label\n"
        + "".join(f"{d.StudyInstanceUID},US/breast/normal\n" for d in orthanc.breast)
    )
    env = {
        **cli_env,
        "PATH": f"{Path(sys.executable).parent}:{cli_env.get('PATH', '')}",
        "CBIR_PG_DSN": db,
        "DICOMWEB_URL": orthanc.url,
        "PACS_USER": USER,
        "PACS_PASSWORD": PASSWORD,
        "CBIR_PG_PACS_SECRET_FILE": str(tmp_path / "pacs.secret"),
        "MODEL": "tiny_cnn",
        "LISTEN_PORT": str(orthanc.listener_port),
        "PACS_HOST": "127.0.0.1",
        "PACS_DICOM_PORT": str(orthanc.dicom),
        "NEW_STUDY": str(tmp_path / "new.dcm"),
        "LABELS_CSV": str(tmp_path / "labels.csv"),
    }
    for k in ("CBIR_PG_PACS_USER", "CBIR_PG_PACS_PASSWORD", "CBIR_PG_PACS_TOKEN"):
        env.pop(k, None)
    script = "set -euo pipefail\n" + walk_block()
    r = subprocess.run(
        ["bash", "-c", script], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=500
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert (tmp_path / "pacs.secret").stat().st_mode & 0o777 == 0o600
    assert len(_images(db, "pacs")) == 16 and set(_images(db, "received")) == {str(new.SOPInstanceUID)}
    with psycopg.connect(db) as c:
        labelled = c.execute("select count(*) from cbir.image where label_id is not null").fetchone()[0]
        states = [r[0] for r in c.execute("select state from cbir.ingest_follower")]
        embedded = c.execute(
            "select count(*) from cbir.embedding_tiny_cnn e join cbir.image i on i.id = e.image_id"
        ).fetchone()[0]
    assert labelled == 8 and states == ["stopped"] and embedded == 17
    assert "follower" in r.stdout and "heartbeat" in r.stdout and PASSWORD not in r.stdout + r.stderr


def test_deploy_units_run_the_documented_commands() -> None:
    import yaml

    follow = (REPO / "deploy" / "pacs" / "cbir-pg-follow.service").read_text()
    listen = (REPO / "deploy" / "pacs" / "cbir-pg-listen.service").read_text()
    for unit, cmd in (
        (follow, "ingest --follow --model"),
        (listen, "dicom listen --bind 0.0.0.0 --port 11112"),
    ):
        assert cmd in unit and "KillSignal=SIGTERM" in unit and "Restart=on-failure" in unit
        assert re.search(r"^TimeoutStopSec=(\d+)$", unit, re.M) and "PASSWORD" not in unit
    services = yaml.safe_load((REPO / "deploy" / "pacs" / "compose.pacs.yml").read_text())["services"]
    assert set(services) == {"follower", "listener"}
    for svc in services.values():
        assert svc["stop_signal"] == "SIGTERM" and svc["depends_on"]["db"]["condition"] == "service_healthy"
        assert (
            "cbir_home:/var/lib/cbir-pg" in svc["volumes"]
            and svc["environment"]["CBIR_PG_HOME"] == "/var/lib/cbir-pg"
        )
    assert "ingest --follow" in " ".join(services["follower"]["command"])
    assert services["listener"]["ports"][0].startswith("${CBIR_LISTEN_BIND:-127.0.0.1}")


def test_inserts_notify_once_per_statement_also_after_revision_0007_is_made_again(db: str) -> None:
    """``image_notify_new`` (made with its function by sql/schema/95_pacs.sql) sends one notification on
    cbir_new_images per inserting statement, also after revision 0007 is downgraded and migrated again."""
    from cbir_pg.db.migrate import downgrade, migrate

    downgrade(Database(db), "0008")
    migrate(Database(db))
    with psycopg.connect(db, autocommit=True) as listener, psycopg.connect(db, autocommit=True) as c:
        listener.execute("listen cbir_new_images")
        ds = c.execute("insert into cbir.dataset (key, kind, name) values ('n', 'csv', 'N') returning id")
        ds_id = ds.fetchone()[0]
        c.execute(
            "insert into cbir.image (dataset_id, uri) select %s, 'u' || g from generate_series(1, 3) g",
            (ds_id,),
        )
        c.execute("insert into cbir.image (dataset_id, uri) values (%s, 'v')", (ds_id,))
        got = [n.channel for n in listener.notifies(timeout=5, stop_after=3)]
    assert got == ["cbir_new_images", "cbir_new_images"]
