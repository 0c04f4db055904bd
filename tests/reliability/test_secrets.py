"""Secrets (issue 8): a DSN password never appears in error messages, logs, CLI output or stored run
metadata. The embedded server trusts local socket logins and ignores the password, so a DSN that
carries one still connects: the whole import → ingest → eval path runs with it.
"""

from __future__ import annotations

import contextlib
import io
import logging
import sys
from pathlib import Path

import psycopg
import pytest
from relhelp import dsn_with, find_values, good_png

from cbir_pg.db.connect import connect, redact, translate
from cbir_pg.errors import CbirError

SECRET = "S3cr3t-pw_7f3a"


def _uri_with_password(dsn: str, password: str) -> str:
    from psycopg.conninfo import conninfo_to_dict

    p = conninfo_to_dict(dsn)
    return f"postgresql://{p.get('user', 'postgres')}:{password}@/{p['dbname']}?host={p['host']}&port={p.get('port', 5432)}"


# --------------------------------------------------------------------------- redaction
@pytest.mark.parametrize(
    "text",
    [
        f"postgresql://alice:{SECRET}@db.example.org:5432/cbir",
        f"postgres://alice:{SECRET}@/cbir?host=/tmp",
        f"postgresql+psycopg://alice:{SECRET}@h/cbir",
        f"host=h user=alice password={SECRET} dbname=cbir",
        f"host=h password = {SECRET} dbname=cbir",
        f"host=h password='{SECRET} with spaces' dbname=cbir",
        f"host=h PASSWORD={SECRET}",
        f"postgresql://alice@h/cbir?sslmode=require&password={SECRET}",
        f"cannot connect (postgresql://alice:{SECRET}@h/cbir): timeout; retry host=h password={SECRET}",
    ],
)
def test_redact_removes_password_in_every_dsn_form(text: str) -> None:
    out = redact(text)
    assert SECRET not in out and "with spaces" not in out
    assert "***" in out


def test_redact_keeps_text_without_password() -> None:
    text = "postgresql://alice@h:5432/cbir?sslmode=require"
    assert redact(text) == text


def test_connection_error_names_the_server_but_not_the_password() -> None:
    dsn = f"host=/nonexistent-socket-dir port=1 user=alice password={SECRET} dbname=cbir"
    with pytest.raises(CbirError) as info:
        connect(dsn)
    msg = str(info.value)
    assert SECRET not in msg and "\n" not in msg
    assert "cannot connect" in msg and "nonexistent-socket-dir" in msg


def test_translate_redacts_a_driver_message_quoting_the_dsn() -> None:
    exc = psycopg.OperationalError(f'connection to "postgresql://bob:{SECRET}@h/db" failed')
    assert SECRET not in str(translate(exc, f"postgresql://bob:{SECRET}@h/db"))
    assert SECRET not in str(translate(psycopg.ProgrammingError(f"bad password={SECRET}")))


# --------------------------------------------------------------------------- the CLI
def _run_cli(argv: list[str], env: dict[str, str] | None = None) -> tuple[int, str]:
    import os

    from cbir_pg.app.cli import main

    out = io.StringIO()
    old_argv, old_env = sys.argv, dict(os.environ)
    sys.argv = ["cbir-pg", *argv]
    if env:
        os.environ.update(env)
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            try:
                main()
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            except Exception as exc:  # --verbose re-raises: the traceback text is output too
                import traceback

                out.write("".join(traceback.format_exception(exc)))
                code = 1
    finally:
        sys.argv = old_argv
        os.environ.clear()
        os.environ.update(old_env)
    return code, out.getvalue()


@pytest.mark.parametrize("verbose", [False, True])
@pytest.mark.parametrize("form", ["uri", "kv"])
def test_cli_connection_failure_never_prints_the_password(verbose: bool, form: str) -> None:
    dsn = (
        f"postgresql://alice:{SECRET}@/cbir?host=/nonexistent-socket-dir&port=1"
        if form == "uri"
        else f"host=/nonexistent-socket-dir port=1 user=alice password={SECRET} dbname=cbir"
    )
    code, text = _run_cli([*(["--verbose"] if verbose else []), "--dsn", dsn, "db", "migrate"])
    assert code == 1
    assert SECRET not in text, text[-2000:]


def test_db_status_with_password_dsn_in_environment_is_redacted(db: str) -> None:
    code, text = _run_cli(["db", "status"], env={"CBIR_PG_DSN": _uri_with_password(db, SECRET)})
    assert code == 0, text
    assert SECRET not in text and "external server" in text


# --------------------------------------------------------------------------- the whole path
@pytest.fixture
def small_dataset(tmp_path: Path) -> Path:
    """30 real BreastMNIST images (10 per split) as a CSV manifest."""
    import numpy as np
    from conftest import require_data
    from PIL import Image

    data = np.load(require_data() / "breastmnist.npz")
    root = tmp_path / "small"
    root.mkdir()
    lines = ["path,label,split,patient"]
    for split in ("train", "val", "test"):
        imgs, labels = data[f"{split}_images"][:10], data[f"{split}_labels"].reshape(-1)[:10]
        for i, (img, lab) in enumerate(zip(imgs, labels, strict=True)):
            name = f"{split}_{i}.png"
            Image.fromarray(img).save(root / name)
            lines.append(f"{name},{'malignant' if lab == 0 else 'benign_or_normal'},{split},p_{split}_{i}")
    (root / "broken.png").write_bytes(good_png(1)[:50])
    lines.append("broken.png,malignant,train,p_broken")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return root / "labels.csv"


@pytest.mark.parametrize("form", ["kv", "uri"])
def test_password_dsn_leaves_no_trace_in_output_logs_or_database(
    db: str, small_dataset: Path, caplog, capfd, form: str, pg_server_dsn: str
) -> None:
    from cbir_pg.datasets.importer import import_dataset
    from cbir_pg.eval.retrieval import evaluate_retrieval
    from cbir_pg.ingest.worker import run_ingest

    secret_dsn = dsn_with(db, password=SECRET) if form == "kv" else _uri_with_password(db, SECRET)
    caplog.set_level(logging.DEBUG)
    import_dataset(
        secret_dsn, "csv", small_dataset, name="small", modality="US", region="breast", progress=False
    )
    run_ingest(secret_dsn, "tiny_cnn", batch_size=8, loader_workers=0, device="cpu", progress=False)
    evaluate_retrieval(secret_dsn, "tiny_cnn", mode="exact", progress=False)
    # errors raised on the way carry no password either
    for bad in (
        lambda: run_ingest(secret_dsn, "tiny_cnn", datasets=["no_such_dataset"], progress=False),
        lambda: evaluate_retrieval(secret_dsn, "no_such_model", progress=False),
        lambda: connect(dsn_with(secret_dsn, dbname="no_such_db")),
    ):
        with pytest.raises(CbirError) as info:
            bad()
        assert SECRET not in str(info.value)

    out, err = capfd.readouterr()
    assert SECRET not in out + err
    assert not [r for r in caplog.records if SECRET in r.getMessage()]
    with psycopg.connect(db) as c:
        runs = c.execute("select count(*) from cbir.eval_run").fetchone()[0]
        errors = c.execute("select count(*) from cbir.error").fetchone()[0]
    assert runs >= 1 and errors >= 1  # there is stored run metadata and error text to check
    assert not find_values(db, [SECRET]), "the password is stored in the database"
    with psycopg.connect(db) as c:
        for (view,) in c.execute(
            "select table_name from information_schema.views where table_schema = 'cbir_report'"
        ).fetchall():
            text = repr(c.execute(f'select * from cbir_report."{view}"').fetchall())
            assert SECRET not in text, f"cbir_report.{view} shows the password"
    # the server's own log (embedded server: <pgdata>/server.log) never sees it either
    from psycopg.conninfo import conninfo_to_dict

    log = Path(conninfo_to_dict(pg_server_dsn).get("host", "")) / "server.log"
    if log.is_file():
        assert SECRET not in log.read_text(errors="replace")
