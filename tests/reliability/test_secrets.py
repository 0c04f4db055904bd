"""Secrets (issues 8 and 13): a DSN password never appears in error messages, logs, CLI output, stored
run metadata or any process's command line. The embedded server's superuser logs in by ``peer`` over
the socket and ignores a password, so a superuser DSN that carries one still connects: the whole
import → ingest → eval path (and every CLI command) runs with it. Other roles need theirs (scram).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest
from dbhelp import cbir_pg
from relhelp import dsn_with, find_values, good_png

from cbir_pg.db.connect import connect, dsn_secrets, redact, translate
from cbir_pg.db.database import Database
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
    assert SECRET not in text and "external" in text and "***" in text


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
        Database(secret_dsn),
        "csv",
        small_dataset,
        name="small",
        modality="US",
        region="breast",
        progress=False,
    )
    run_ingest(Database(secret_dsn), "tiny_cnn", batch_size=8, loader_workers=0, device="cpu", progress=False)
    evaluate_retrieval(Database(secret_dsn), "tiny_cnn", mode="exact", progress=False)
    # errors raised on the way carry no password either
    for bad in (
        lambda: run_ingest(Database(secret_dsn), "tiny_cnn", datasets=["no_such_dataset"], progress=False),
        lambda: evaluate_retrieval(Database(secret_dsn), "no_such_model", progress=False),
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


# --------------------------------------------------------------------------- round 2 (issue 13)
#: a password with every character a DSN treats specially; pieces are long enough to grep for
ODD = "Zq7@Kp3:Lm5/Xw9?Tr2#Bn4 Yh6'Vc8\\Gd1%Fs0&"
ODD_PIECES = ["Zq7", "Kp3", "Lm5", "Xw9", "Tr2", "Bn4", "Yh6", "Vc8", "Gd1", "Fs0"]


def _pieces_in(text: str, pieces: list[str] = ODD_PIECES) -> list[str]:
    return [p for p in pieces if p in text]


@pytest.mark.parametrize(
    "dsn",
    [
        "postgresql://alice:p@ss-Zq7Kp3@db.example.org/cbir",  # an unencoded '@' in the password
        "postgresql://alice:Zq7@Kp3@Lm5@h/cbir",
        f"postgresql://alice:{quote(ODD, safe='')}@h:5432/cbir?sslmode=require",
        "host=h user=alice password='Zq7 Kp3\\'Lm5' dbname=cbir",
        f"host=h user=alice password={quote(ODD, safe='')} dbname=cbir",
    ],
)
def test_redact_removes_odd_passwords_whole(dsn: str) -> None:
    out = redact(dsn)
    assert "***" in out
    assert not _pieces_in(out) and "p@ss" not in out, out
    assert "alice" in out  # the rest stays readable


def test_redact_uses_the_known_password_in_free_text() -> None:
    dsn = f"postgresql://alice:{quote(ODD, safe='')}@h/cbir"
    message = f"server said: bad login for password {ODD} (encoded {quote(ODD, safe='')})"
    assert not _pieces_in(redact(message, dsn_secrets(dsn)))


@pytest.mark.parametrize(
    "dsn",
    [
        "host=/tmp user=alice password=Zq7 Kp3Lm5 dbname=cbir",  # unquoted space: 'missing "=" after "Kp3Lm5"'
        "host=/tmp user=alice password='Zq7Kp3Lm5 dbname=cbir",  # unterminated quote
        "postgresql://alice:Zq7%zzKp3Lm5@h/cbir",  # bad percent-encoding: libpq quotes the token
        "postgresql://alice:Zq7Kp3Lm5@h/cbir?Xw9Tr2=1",  # unknown URI parameter: libpq quotes its name
        "postgresql://alice:Zq7@Kp3Lm5@h/cbir",  # libpq would read host 'Kp3Lm5@h' and echo it
        "postgresql://alice:Zq7/Kp3Lm5@h/cbir",  # libpq would read port 'Zq7', dbname 'Kp3Lm5@h/cbir'
        "host=/tmp port=Zq7Kp3Lm5 password=Zq7Kp3Lm5",  # invalid port
    ],
)
def test_libpq_parse_errors_never_echo_the_password(dsn: str) -> None:
    pieces = ["Zq7", "Kp3Lm5", "Xw9Tr2"]
    with pytest.raises(CbirError) as info:
        connect(dsn)
    msg = str(info.value)
    assert not _pieces_in(msg, pieces) and "\n" not in msg, msg
    code, text = _run_cli(["--dsn", dsn, "db", "status"])
    assert code == 1 and not _pieces_in(text, pieces), text


def test_db_url_redacts_unless_show_password(db: str) -> None:
    dsn = _uri_with_password(db, quote(ODD, safe=""))
    code, text = _run_cli(["db", "url"], env={"CBIR_PG_DSN": dsn})
    assert code == 0 and "***" in text and not _pieces_in(text), text
    code, text = _run_cli(["db", "url", "--show-password"], env={"CBIR_PG_DSN": dsn})
    assert code == 0 and text.strip() == dsn


def _cmdlines() -> list[str]:
    """Every process's command line, as ``ps -eo args`` shows them to any local user."""
    out = subprocess.run(
        ["ps", "-eo", "args"], capture_output=True, text=True, check=False
    ).stdout.splitlines()
    for f in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            out.append(f.read_bytes().replace(b"\0", b" ").decode(errors="replace"))
    return out


class _PsWatcher:
    """Samples every process's command line in a thread while a block runs."""

    def __init__(self) -> None:
        import threading

        self.seen: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.seen += _cmdlines()
            self._stop.wait(0.2)

    def __enter__(self) -> _PsWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


@pytest.fixture
def scram_reader(db: str, pg_server_dsn: str):
    """DSN (with its odd password, percent-encoded) of a LOGIN member of cbir_reader: scram checks it."""
    import uuid

    from psycopg import sql

    name = f"t_sec_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_server_dsn, autocommit=True) as c:
        c.execute(
            sql.SQL("create role {} login password {} in role cbir_reader").format(
                sql.Identifier(name), sql.Literal(ODD)
            )
        )
    yield _uri_with_password(dsn_with(db, user=name), quote(ODD, safe="")), name
    with psycopg.connect(pg_server_dsn, autocommit=True) as c:
        c.execute(sql.SQL("drop role if exists {}").format(sql.Identifier(name)))


@pytest.mark.skipif(
    bool(os.environ.get("CBIR_PG_TEST_DSN")), reason="needs the embedded server's scram logins"
)
def test_db_psql_gets_the_password_from_a_passfile_never_argv(scram_reader, cli_env) -> None:
    """``cbir-pg db psql -c ...`` passes psql's own options through; scram needs the real password, so
    a successful login proves it arrived, and no process's command line ever showed it."""
    dsn, name = scram_reader
    env = {**cli_env, "CBIR_PG_DSN": dsn}
    with _PsWatcher() as ps:
        r = cbir_pg("db", "psql", "-At", "-c", "select current_user, pg_sleep(1.5)", env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"{name}|"
    assert any("psql" in line and "-c" in line for line in ps.seen), "the sampler never saw psql run"
    leaked = [line for line in ps.seen if _pieces_in(line)]
    assert not leaked, leaked[:3]
    assert not _pieces_in(r.stdout + r.stderr)
    # a wrong password fails: the passfile is what logged in above
    env["CBIR_PG_DSN"] = _uri_with_password(dsn_with(dsn, password=""), "wrong-password")
    r = cbir_pg("db", "psql", "-c", "select 1", env=env)
    assert r.returncode != 0 and "password authentication failed" in r.stderr


def _leaf_commands() -> set[tuple[str, ...]]:
    import typer

    from cbir_pg.app.cli import app

    out: set[tuple[str, ...]] = set()

    def walk(cmd, path):
        if hasattr(cmd, "commands"):
            for n, sub in cmd.commands.items():
                walk(sub, (*path, n))
            if path and cmd.invoke_without_command:  # a group that runs itself: ``cbir-pg ingest``
                out.add(path)
            return
        out.add(path)

    walk(typer.main.get_command(app), ())
    return out


def _every_command(small_dataset: Path, tmp_path: Path, empty: Path, report: Path) -> list[list[str]]:
    """One run of every CLI command, in an order where each has what it needs (a dataset, vectors, an
    index, runs to compare)."""
    return _store_commands(small_dataset, empty) + _eval_and_teardown_commands(tmp_path, empty, report)


def _store_commands(small_dataset: Path, empty: Path) -> list[list[str]]:
    """The server, roles, a dataset, labels, vectors, an index and a search."""
    return [
        ["db", "start"],
        ["db", "status"],
        ["db", "url"],
        ["db", "migrate"],
        ["db", "psql", "-c", "select 1"],
        ["db", "roles", "add", "t_sec_every", "--reader"],
        ["db", "roles", "list"],
        ["audit", "--format", "json"],
        ["db", "watchdog", "--once"],
        [
            "datasets",
            "import",
            "csv",
            str(small_dataset),
            "--name",
            "small",
            "--modality",
            "US",
            "--region",
            "breast",
            "-q",
        ],
        ["datasets", "list"],
        ["db", "roles", "grant-dataset", "t_sec_every", "small"],
        ["db", "roles", "grants"],
        ["db", "roles", "revoke-dataset", "t_sec_every", "small"],
        ["db", "roles", "drop", "t_sec_every"],
        ["datasets", "dedupe"],
        ["labels", "attach", str(empty / "none.csv"), "--dataset", "small"],
        ["labels", "list"],
        ["models", "list"],
        ["ingest", "--model", "tiny_cnn", "--loader-workers", "0", "--device", "cpu", "--no-progress"],
        ["ingest", "status"],
        ["index", "build", "--model", "tiny_cnn", "--recall-queries", "5"],
        ["index", "status"],
        ["search", "--model", "tiny_cnn", "--image-id", "1", "--k", "3"],
    ]


def _eval_and_teardown_commands(tmp_path: Path, empty: Path, report: Path) -> list[list[str]]:
    """Every evaluation, the refusals, the report, then dropping it all and stopping the server."""
    return [
        ["eval", "retrieval", "--model", "tiny_cnn", "--compare-exact", "--no-progress"],
        ["eval", "show"],
        ["eval", "compare-paper"],
        ["explain", "1", "2", "--model", "tiny_cnn", "--png", str(tmp_path / "explain.png"), "--no-cache"],
        ["eval", "explain", "--model", "tiny_cnn", "--method", "occlusion", "--pairs", "2", "--grid", "3"],
        ["eval", "compare", "1", "2"],
        ["eval", "compare-neighbours", str(empty / "none.zip"), "--run", "1"],
        ["eval", "knn", "--model", "tiny_cnn", "--k", "1,3", "--no-progress"],
        ["eval", "linear", "--model", "tiny_cnn", "--max-epochs", "2", "--no-progress"],
        [
            "eval",
            "ablation",
            "--model",
            "tiny_cnn",
            "--sizes",
            "2",
            "--min-class-size",
            "2",
            "--queries-per-class",
            "2",
            "--no-progress",
        ],
        ["eval", "export", "--out", str(tmp_path / "export"), "--format", "csv"],
        # these three refuse (no text tower, no HDF5 files, port 0), still with the DSN in the environment
        ["eval", "zeroshot", "--model", "tiny_cnn"],
        ["embeddings", "import-h5", str(empty), "--model", "tiny_cnn"],
        ["serve", "--port", "0"],
        ["dicom", "listen", "--port", "-1"],
        ["report", "--out", str(report), "--tsne-sample", "20", "--grid-queries", "1"],
        ["index", "drop", "--model", "tiny_cnn"],
        ["models", "drop", "tiny_cnn", "--yes"],
        ["demo", "--model", "no_such_model", "--data-dir", str(empty), "--out", str(report), "--no-progress"],
        ["db", "stop"],
    ]


def test_every_cli_command_with_a_password_dsn_leaks_nothing(
    db: str, small_dataset: Path, tmp_path: Path, capfd, pg_server_dsn: str
) -> None:
    """Every command of the CLI, run with ``CBIR_PG_DSN`` carrying an odd password (the superuser logs in
    by peer, so the commands really work): the password is in no output, no process's command line
    and not the server's log."""
    dsn = _uri_with_password(db, quote(ODD, safe=""))
    report, empty = tmp_path / "report", tmp_path / "empty"
    empty.mkdir()
    runs = _every_command(small_dataset, tmp_path, empty, report)
    missing = {c for c in _leaf_commands() if not any(r[: len(c)] == list(c) for r in runs)}
    assert not missing, f"commands not exercised: {sorted(missing)}"

    codes = {}
    with _PsWatcher() as ps:
        for argv in runs:
            code, text = _run_cli(argv, env={"CBIR_PG_DSN": dsn})
            out, err = capfd.readouterr()  # what child processes (psql) wrote
            codes[" ".join(argv[:3])] = code
            assert not _pieces_in(text + out + err), (argv, text[-1500:])
    assert not [line for line in ps.seen if _pieces_in(line)]
    # the commands really ran against the database (not just failed to connect)
    worked = [c for c, v in codes.items() if v == 0]
    # refusals by design: zeroshot, import-h5, serve, demo, labels attach, compare-neighbours, dicom listen
    assert len(worked) >= len(runs) - 9, codes
    from psycopg.conninfo import conninfo_to_dict

    log = Path(conninfo_to_dict(pg_server_dsn).get("host", "")) / "server.log"
    if log.is_file():
        assert not _pieces_in(log.read_text(errors="replace"))
