"""Pure logic of the PACS service: credentials, URL checks, StudyDate ranges, viewer links, label CSVs."""

from __future__ import annotations

from pathlib import Path

import pytest

from cbir_pg.errors import ConfigError
from cbir_pg.pacs.credentials import check_url, load_credentials
from cbir_pg.pacs.dicomweb import parse_study_date
from cbir_pg.pacs.labels import read_mapping
from cbir_pg.pacs.viewer import viewer_template, viewer_url


def test_credentials_order_and_secrets_never_in_repr(tmp_path: Path) -> None:
    assert load_credentials({}).kind == "none"
    c = load_credentials(
        {"CBIR_PG_PACS_TOKEN": "tok-123", "CBIR_PG_PACS_USER": "u", "CBIR_PG_PACS_PASSWORD": "p"}
    )
    assert (c.kind, c.token) == ("bearer", "tok-123") and "tok-123" not in repr(c)
    c = load_credentials({"CBIR_PG_PACS_USER": "alice", "CBIR_PG_PACS_PASSWORD": "pw-secret"})
    assert (c.kind, c.user) == ("basic", "alice") and "pw-secret" not in repr(c)
    assert c.session().auth == ("alice", "pw-secret")
    with pytest.raises(ConfigError, match="CBIR_PG_PACS_PASSWORD is not"):
        load_credentials({"CBIR_PG_PACS_USER": "alice"})
    f = tmp_path / "s"
    f.write_text("# PACS\ntoken = abc\n")
    f.chmod(0o640)
    with pytest.raises(ConfigError, match="chmod 600") as exc:
        load_credentials({"CBIR_PG_PACS_SECRET_FILE": str(f)})
    assert "abc" not in str(exc.value)
    f.chmod(0o600)
    c = load_credentials({"CBIR_PG_PACS_SECRET_FILE": str(f)})
    assert c.kind == "bearer" and c.session().headers["Authorization"] == "Bearer abc"
    f.write_text("user=bob\n")
    with pytest.raises(ConfigError, match="neither token"):
        load_credentials({"CBIR_PG_PACS_SECRET_FILE": str(f)})


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("http://pacs:8042/dicom-web/", "http://pacs:8042/dicom-web"),
        ("https://pacs.example.org/wado", "https://pacs.example.org/wado"),
        ("http://u:pw@pacs/dicom-web", None),
        ("ftp://pacs/dicom-web", None),
        ("/data/dicom", None),
        ("http://pacs/dicom-web?token=x", None),
    ],
)
def test_check_url(url: str, ok: str | None) -> None:
    if ok is None:
        with pytest.raises(ConfigError):
            check_url(url)
    else:
        assert check_url(url) == ok


@pytest.mark.parametrize(
    ("text", "dicom"),
    [
        ("20240101-20241231", "20240101-20241231"),
        ("2024-01-01..2024-12-31", "20240101-20241231"),
        ("20240101-", "20240101-"),
        ("-20240101", "-20240101"),
        ("2024-03-05", "20240305-20240305"),
        (None, None),
    ],
)
def test_parse_study_date(text, dicom) -> None:
    assert parse_study_date(text) == dicom


@pytest.mark.parametrize("bad", ["2024", "20241231-20240101", "-", "yesterday"])
def test_parse_study_date_refuses(bad: str) -> None:
    with pytest.raises(ConfigError):
        parse_study_date(bad)


def test_viewer_template_and_links() -> None:
    assert viewer_template({}) is None
    t = viewer_template({"CBIR_PG_VIEWER_URL": "http://v/ohif/viewer?StudyInstanceUIDs={study}&s={server}"})
    ref = {"study": "1.2.3", "series": "1.2.4", "sop": "1.2.5", "server": "http://pacs:8042/dicom-web"}
    assert (
        viewer_url(t, ref)
        == "http://v/ohif/viewer?StudyInstanceUIDs=1.2.3&s=http%3A%2F%2Fpacs%3A8042%2Fdicom-web"
    )
    assert viewer_url(t, {**ref, "server": None}) == "http://v/ohif/viewer?StudyInstanceUIDs=1.2.3&s="
    assert viewer_url("http://v/{sop}", {**ref, "sop": None}) is None
    for bad in ("javascript:alert(1)//{study}", "http://v/{patient}", "http://v/{study"):
        with pytest.raises(ConfigError):
            viewer_template({"CBIR_PG_VIEWER_URL": bad})


def test_label_csv_levels_and_errors(tmp_path: Path) -> None:
    f = tmp_path / "m.csv"
    f.write_text("series_instance_uid,label\n1.2.3,CR/chest/normal\n1.2.4, cr/Chest/Pneumonia \n")
    level, m = read_mapping(f)
    assert (level, m) == ("series", {"1.2.3": "CR/chest/normal", "1.2.4": "CR/chest/pneumonia"})
    for text, msg in [
        ("uid,label\n1,CR/chest/normal\n", "exactly one of"),
        ("sop_instance_uid,study_instance_uid,label\n1,2,CR/chest/normal\n", "exactly one of"),
        ("sop_instance_uid,label\n1,\n", "empty"),
        ("sop_instance_uid,label\n1,not-a-key\n", ":2:"),
    ]:
        f.write_text(text)
        with pytest.raises(ConfigError, match=msg):
            read_mapping(f)
