"""`cbir-pg serve` without real data: the least-privilege role, the loopback rule, assets in the package."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from cbir_pg.app.serve import check_host
from cbir_pg.app.serve.access import prepare_web_role
from cbir_pg.errors import ConfigError

FORBIDDEN = [
    "select patient_key from cbir.patient",
    "select extra from cbir.patient",
    "select uri from cbir.image",
    "select source_labels from cbir.image",
    "select root from cbir.dataset",
    "select * from cbir.image",
    "select * from cbir.installation",
    "insert into cbir.label (key, modality, region, finding, kind) values ('a/b/c', 'a', 'b', 'c', 'anatomical')",
]


def test_web_role_reads_metadata_but_never_patient_keys_or_paths(db: str, tmp_path: Path) -> None:
    with psycopg.connect(db, autocommit=True) as owner:
        owner.execute(
            "insert into cbir.dataset (key, kind, name, root) values ('d', 'csv', 'D', '/secret/root')"
        )
        owner.execute(
            "insert into cbir.patient (dataset_id, patient_key, sex, age) values (1, 'PAT-123', 'F', 54)"
        )
        owner.execute(
            "insert into cbir.image (dataset_id, patient_id, uri, split) values (1, 1, 'a/b.png', 'test')"
        )
    web = prepare_web_role(db, tmp_path)
    assert "cbir_web" in web
    with psycopg.connect(web, autocommit=True) as conn:
        assert conn.execute("select current_user").fetchone()[0] == "cbir_web"
        row = conn.execute(
            "select i.id, i.split, d.key, p.sex, p.age from cbir.image i join cbir.dataset d on d.id = i.dataset_id "
            "join cbir.patient p on p.id = i.patient_id"
        ).fetchone()
        assert row == (1, "test", "d", "F", 54.0)
        assert conn.execute("select count(*) from cbir_report.leaderboard").fetchone()[0] == 0
        # the server's one way to the pixels: the file of one image by id
        assert conn.execute("select cbir.image_file(1)").fetchone()[0] == "/secret/root/a/b.png"
        for q in FORBIDDEN:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(q)


def test_web_password_is_generated_once_private_and_reused(db: str, tmp_path: Path) -> None:
    first = prepare_web_role(db, tmp_path)
    path = tmp_path / "serve" / "web-password"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(path.read_text().strip()) >= 32
    assert prepare_web_role(db, tmp_path) == first


def test_unmigrated_database_is_one_clear_error(empty_db: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cbir-pg db migrate"):
        prepare_web_role(empty_db, tmp_path)


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost", "127.0.0.2"])
def test_loopback_needs_no_flag(host: str) -> None:
    assert check_host(host, allow_remote=False) is None


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.5", "::", "example.org"])
def test_other_hosts_need_the_flag_authentication_and_get_a_warning(host: str) -> None:
    with pytest.raises(ConfigError, match="--allow-remote"):
        check_host(host, allow_remote=False)
    # the one-time link is for loopback; passwords need TLS; a wildcard address needs its host names
    with pytest.raises(ConfigError, match="needs authentication"):
        check_host(host, allow_remote=True, auth="local", tls=True, allowed_hosts=("cbir.example",))
    with pytest.raises(ConfigError, match="--certfile"):
        check_host(host, allow_remote=True, auth="password", tls=False, allowed_hosts=("cbir.example",))
    if host in ("0.0.0.0", "::"):
        with pytest.raises(ConfigError, match="--allowed-host"):
            check_host(host, allow_remote=True, auth="proxy")
    for auth, tls in (("password", True), ("proxy", False)):
        warning = check_host(host, allow_remote=True, auth=auth, tls=tls, allowed_hosts=("cbir.example",))
        assert "medical images" in warning


def test_cli_refuses_a_public_host_in_one_line(cli_env: dict[str, str]) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "cbir_pg", "serve", "--host", "0.0.0.0", "--port", "8123"],
        capture_output=True,
        text=True,
        env={**cli_env, "PYTHONPATH": os.getcwd()},
        timeout=60,
    )
    assert out.returncode == 1
    assert out.stderr.strip().startswith("error: --host 0.0.0.0") and "--allow-remote" in out.stderr
    assert "Traceback" not in out.stderr
    assert not (Path(cli_env["CBIR_PG_HOME"]) / "pgdata").exists()  # refused before starting anything


def test_templates_and_assets_are_package_data() -> None:
    from importlib.resources import files

    root = files("cbir_pg.app.serve")
    for name in (
        "templates/search.html",
        "templates/image.html",
        "templates/results.html",
        "templates/error.html",
        "static/app.css",
        "static/app.js",
    ):
        assert (root / name).is_file(), name
    # nothing is fetched from outside at run time
    for name in ("static/app.css", "static/app.js", "templates/base.html"):
        text = (root / name).read_text()
        assert "http://" not in text and "https://" not in text, name


def test_a_model_is_searchable_once_its_table_holds_a_vector(db: str, tmp_path: Path) -> None:
    """The per-request model check: unknown and empty models are a 404, one vector makes it searchable."""
    from cbir_pg.app.serve.store import Store
    from cbir_pg.encoders import get_config
    from cbir_pg.errors import NotFoundError
    from cbir_pg.ingest.worker import ensure_encoder_table

    with psycopg.connect(db, autocommit=True) as owner:
        owner.execute("insert into cbir.dataset (key, kind, name, root) values ('d', 'csv', 'D', '/r')")
        owner.execute("insert into cbir.image (dataset_id, uri, split) values (1, 'a.png', 'test')")
        ensure_encoder_table(owner, get_config("tiny_cnn"))
    store = Store(prepare_web_role(db, tmp_path))
    try:
        for model in ("tiny_vit", "tiny_cnn"):  # no table; a table without vectors
            with pytest.raises(NotFoundError, match="no stored vectors"):
                store.check_model(None, model)
        with psycopg.connect(db, autocommit=True) as owner:
            owner.execute(
                "insert into cbir.embedding_tiny_cnn (image_id, embedding) values (1, %s::vector)",
                ("[" + ",".join(["0.25"] * 16) + "]",),
            )
        assert store.check_model(None, "tiny_cnn") == "tiny_cnn"
        assert [m["model"] for m in store.models(None)] == ["tiny_cnn"]
    finally:
        store.close()
