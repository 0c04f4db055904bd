"""The embedded server as an attacker on the same machine would try it (issue 13, "The embedded server").

- the Unix socket folder is private (0700, owned by the server's user) whatever the path length, and a
  folder others can write is refused;
- ``pg_hba.conf`` has no ``trust``: the superuser logs in by ``peer``, every other role with its
  scram-sha-256 password (a reader with a wrong password is refused); old homes are upgraded on start;
- TCP is opt-in (``db start --listen``), scram only, never the superuser; ``db roles add`` makes a
  login whose printed DSN reaches the ``cbir_report`` views over TCP;
- a reader is capped (connections, statement timeout, temp files), cannot use large objects, and the
  owner and the workers always find a free connection;
- concurrent first starts and a stale ``postmaster.pid`` end with one healthy server and one clear line.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from dbhelp import cbir_pg
from psycopg import sql
from relhelp import dsn_with

from cbir_pg.db.server import EmbeddedServer
from cbir_pg.errors import DatabaseError

pytestmark = pytest.mark.skipif(
    bool(os.environ.get("CBIR_PG_TEST_DSN")), reason="checks the embedded server (CBIR_PG_TEST_DSN is set)"
)

REPO = Path(__file__).resolve().parents[2]


def _cli(env: dict[str, str], *args: str, timeout: int = 180) -> subprocess.CompletedProcess:
    return cbir_pg(*args, env=env, timeout=timeout, cwd=REPO)


def _server_uid() -> int:
    if os.geteuid() != 0:
        return os.geteuid()
    import pwd

    from cbir_pg.db.server import SYSTEM_USER_WHEN_ROOT

    return pwd.getpwnam(SYSTEM_USER_WHEN_ROOT).pw_uid


@pytest.fixture
def long_home() -> Iterator[Path]:
    """A data directory whose socket path would not fit a Unix socket (over 100 bytes)."""
    root = Path(tempfile.mkdtemp(prefix="cbl", dir="/tmp"))
    pgdata = root / ("long_" + "x" * 60) / ("deeper_" + "y" * 30) / "pgdata"
    pgdata.parent.mkdir(parents=True)
    server = EmbeddedServer(pgdata)
    yield pgdata
    server.stop()
    sock = server.socket_dir()
    if sock != server.pgdata:
        shutil.rmtree(sock, ignore_errors=True)
    shutil.rmtree(root, ignore_errors=True)


# --------------------------------------------------------------------------- the socket
def test_long_home_gets_a_private_socket_directory(long_home: Path) -> None:
    server = EmbeddedServer(long_home)
    st = server.start()
    sock_dir = st.socket_dir
    assert sock_dir is not None and sock_dir != server.pgdata  # the long path forced a separate folder
    info = os.lstat(sock_dir)
    assert stat.S_ISDIR(info.st_mode) and not stat.S_ISLNK(info.st_mode)
    assert stat.S_IMODE(info.st_mode) == 0o700, oct(info.st_mode)
    assert info.st_uid == _server_uid()
    parent = os.lstat(sock_dir.parent)
    assert parent.st_mode & 0o022 == 0, f"{sock_dir.parent} is writable by others"
    assert parent.st_uid == os.geteuid()
    sock = os.lstat(sock_dir / f".s.PGSQL.{st.port}")
    assert stat.S_ISSOCK(sock.st_mode) and stat.S_IMODE(sock.st_mode) & 0o077 == 0
    with psycopg.connect(st.uri("postgres")) as c:  # and the owner still gets in
        assert c.execute("select current_user").fetchone()[0] == "postgres"


def test_start_refuses_a_socket_directory_others_can_write(long_home: Path) -> None:
    server = EmbeddedServer(long_home)
    target = server.socket_dir()
    target.mkdir(parents=True)
    target.chmod(0o777)  # what an attacker (or the first round's code, as root) left there
    try:
        with pytest.raises(DatabaseError) as info:
            server.start()
        msg = str(info.value)
        assert "refusing to start" in msg and str(target) in msg and "\n" not in msg
        assert not server.status().running
    finally:
        shutil.rmtree(target, ignore_errors=True)
    # once the folder is gone, the server makes its own private one
    st = server.start()
    assert stat.S_IMODE(os.lstat(st.socket_dir).st_mode) == 0o700


# --------------------------------------------------------------------------- authentication
@pytest.fixture
def reader_login(db: str, pg_server_dsn: str) -> Iterator[tuple[str, str]]:
    """(name, password) of a LOGIN member of cbir_reader with a password."""
    name, password = f"t_rd_{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    with psycopg.connect(pg_server_dsn, autocommit=True) as c:
        c.execute(
            sql.SQL("create role {} login password {} in role cbir_reader").format(
                sql.Identifier(name), sql.Literal(password)
            )
        )
    yield name, password
    with psycopg.connect(pg_server_dsn, autocommit=True) as c:
        c.execute(sql.SQL("drop role if exists {}").format(sql.Identifier(name)))


def test_reader_with_a_wrong_password_is_refused(db: str, reader_login: tuple[str, str]) -> None:
    name, password = reader_login
    for wrong in ("wrong-password", ""):
        with pytest.raises(psycopg.OperationalError) as info:
            psycopg.connect(dsn_with(db, user=name, password=wrong), connect_timeout=5)
        assert "password" in str(info.value)
    with psycopg.connect(dsn_with(db, user=name, password=password)) as c:
        assert c.execute("select current_user").fetchone()[0] == name


def test_hba_has_no_trust_and_the_superuser_uses_peer(pg_server_dsn: str) -> None:
    with psycopg.connect(pg_server_dsn) as c:
        rules = c.execute(
            "select type, database, user_name, auth_method, options, error from pg_hba_file_rules"
        ).fetchall()
    assert rules and not [r for r in rules if r[5]], rules
    assert "trust" not in {r[3] for r in rules}
    local = [r for r in rules if r[0] == "local"]
    assert local[0][2] == ["postgres"] and local[0][3] == "peer"
    assert {r[3] for r in local[1:]} == {"scram-sha-256"}
    tcp = [r for r in rules if r[0].startswith("host")]
    assert tcp[0][2] == ["postgres"] and tcp[0][3] == "reject"


def test_an_old_trust_home_is_upgraded_on_start(long_home: Path) -> None:
    """A running server from the first round (``trust`` for everything) gets the new pg_hba.conf from the
    next command that starts it; a stopped one before it starts."""
    server = EmbeddedServer(long_home)
    st = server.start()
    admin = st.uri("postgres")
    name = "t_old_reader"
    with psycopg.connect(admin, autocommit=True) as c:
        c.execute(f"create role {name} login password 'right-pw'")
    old_hba = "local all all trust\nhost all all 127.0.0.1/32 trust\n"
    (server.pgdata / "pg_hba.conf").write_text(old_hba)
    with psycopg.connect(admin, autocommit=True) as c:
        c.execute("select pg_reload_conf()")
    time.sleep(0.5)
    with psycopg.connect(dsn_with(admin, user=name, password="wrong")) as c:  # the old hole, reproduced
        assert c.execute("select current_user").fetchone()[0] == name

    st = server.start()  # what every command does first
    assert st.note and "upgraded" in st.note
    time.sleep(0.5)
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(dsn_with(admin, user=name, password="wrong"), connect_timeout=5)

    server.stop()
    (server.pgdata / "pg_hba.conf").write_text(old_hba)
    st = server.start()
    assert "trust" not in (server.pgdata / "pg_hba.conf").read_text()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(dsn_with(st.uri("postgres"), user=name, password="wrong"), connect_timeout=5)


# --------------------------------------------------------------------------- TCP and login roles
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tcp_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_reader_role_over_tcp_reads_the_report_views(cli_env: dict[str, str]) -> None:
    """``db start --listen`` + ``db roles add NAME --reader``: the printed DSN reaches every
    ``cbir_report`` view over TCP with scram; nothing else. This is the BI-tool path (Metabase, Superset)."""
    port = _free_port()
    r = _cli(cli_env, "db", "start")
    assert r.returncode == 0, r.stderr
    assert not _tcp_open(port)  # default: no TCP at all
    r = _cli(cli_env, "db", "start", "--listen", f"127.0.0.1:{port}")
    assert r.returncode == 0, r.stderr
    assert f"127.0.0.1:{port}" in r.stdout and len(r.stdout.strip().splitlines()) == 1
    assert _cli(cli_env, "db", "migrate").returncode == 0
    r = _cli(cli_env, "db", "roles", "add", "bi_reader", "--reader")
    assert r.returncode == 0, r.stderr
    lines = dict(line.split(": ", 1) for line in r.stdout.splitlines() if ": " in line)
    password = lines["password (shown once, not stored in clear)"].strip()
    dsn = lines["dsn"].strip()
    assert dsn.startswith(f"postgresql://bi_reader:{password}@127.0.0.1:{port}/")

    with psycopg.connect(dsn, connect_timeout=10) as c:
        assert c.execute("select inet_server_port()").fetchone()[0] == port  # really TCP
        views = [
            v
            for (v,) in c.execute(
                "select table_name from information_schema.views where table_schema = 'cbir_report'"
            )
        ]
        assert {"leaderboard", "class_precision", "eval_runs"} <= set(views)
        for v in views:
            c.execute(sql.SQL("select * from {} limit 1").format(sql.Identifier("cbir_report", v)))
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            c.execute("select * from cbir.patient")
    with pytest.raises(psycopg.OperationalError):  # scram: a wrong password is refused over TCP too
        psycopg.connect(dsn_with(dsn, password="wrong"), connect_timeout=5)
    with pytest.raises(psycopg.OperationalError) as info:  # the superuser never logs in over TCP
        psycopg.connect(dsn_with(dsn, user="postgres", password=""), connect_timeout=5)
    assert "rejects" in str(info.value)
    # the password is not stored in clear: only a SCRAM verifier
    r = _cli(
        cli_env, "db", "psql", "-At", "-c", "select rolpassword from pg_authid where rolname = 'bi_reader'"
    )
    assert r.returncode == 0 and r.stdout.startswith("SCRAM-SHA-256$") and password not in r.stdout
    r = _cli(cli_env, "db", "status")
    assert f"127.0.0.1:{port}" in r.stdout


# --------------------------------------------------------------------------- resource limits
@pytest.fixture
def readers(db: str) -> Iterator:
    """Factory: ``readers(n, kind)`` creates ``n`` login roles through :func:`cbir_pg.db.roles.add_role`
    and returns their DSNs; all are dropped after the test."""
    from cbir_pg.db.roles import add_role, drop_role

    made: list[str] = []

    def make(n: int, kind: str = "reader") -> list[str]:
        out = []
        with psycopg.connect(db, autocommit=True) as c:
            for _ in range(n):
                role = add_role(c, f"t_{kind}_{uuid.uuid4().hex[:8]}", kind)
                made.append(role.name)
                out.append(dsn_with(db, user=role.name, password=role.password))
        return out

    yield make
    with psycopg.connect(db, autocommit=True) as c:
        c.execute("select pg_terminate_backend(pid) from pg_stat_activity where usename = any(%s)", (made,))
        for name in made:
            drop_role(c, name)


def test_reader_cannot_use_large_objects_and_has_limits(readers, db: str) -> None:
    (reader,) = readers(1)
    with psycopg.connect(reader, autocommit=True) as c:
        for stmt in (
            "select lo_from_bytea(0, 'stored by a reader')",
            "select lo_create(0)",
            "select lo_creat(-1)",
            "select lo_put(1, 0, 'x')",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                c.execute(stmt)
        assert c.execute("show statement_timeout").fetchone()[0] == "2min"
        assert c.execute("show temp_file_limit").fetchone()[0] == "1GB"
        assert c.execute("show idle_in_transaction_session_timeout").fetchone()[0] == "5min"
        with pytest.raises(psycopg.errors.QueryCanceled):  # the timeout is enforced, here shortened
            c.execute("set statement_timeout = '100ms'")
            c.execute("select pg_sleep(5)")
    with psycopg.connect(db) as c:
        assert c.execute("select count(*) from pg_largeobject_metadata").fetchone()[0] == 0


def test_a_reader_made_by_hand_gets_the_limits_on_migrate(db: str, pg_server_dsn: str) -> None:
    from cbir_pg.db.database import Database
    from cbir_pg.db.migrate import migrate

    name = f"t_hand_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_server_dsn, autocommit=True) as c:
        c.execute(
            sql.SQL("create role {} login password 'x' in role cbir_reader").format(sql.Identifier(name))
        )
    try:
        migrate(Database(db))
        with psycopg.connect(db) as c:
            limit, config = c.execute(
                "select rolconnlimit, rolconfig from pg_roles where rolname = %s", (name,)
            ).fetchone()
        assert limit == 10 and "statement_timeout=2min" in config and "temp_file_limit=1GB" in config
    finally:
        with psycopg.connect(pg_server_dsn, autocommit=True) as c:
            c.execute(sql.SQL("drop role {}").format(sql.Identifier(name)))


def test_readers_cannot_lock_out_the_owner_or_the_workers(readers, db: str) -> None:
    """One reader stops at its connection limit; many readers together stop where the slots reserved
    for workers and the owner begin; a worker and the owner still connect."""
    from cbir_pg.db.server import MAX_CONNECTIONS

    reader_dsns = readers(MAX_CONNECTIONS // 10 + 2)
    (worker,) = readers(1, "worker")
    held: list[psycopg.Connection] = []
    try:
        for _ in range(10):
            held.append(psycopg.connect(reader_dsns[0]))
        with pytest.raises(psycopg.OperationalError) as info:
            psycopg.connect(reader_dsns[0], connect_timeout=5)
        assert "too many connections for role" in str(info.value)

        refused = None
        for dsn in reader_dsns[1:]:
            for _ in range(10):
                try:
                    held.append(psycopg.connect(dsn, connect_timeout=5))
                except psycopg.OperationalError as exc:
                    refused = str(exc)
                    break
            if refused:
                break
        assert refused and "reserved" in refused, refused  # readers ran out before the server did
        with psycopg.connect(worker, connect_timeout=5) as c:
            assert c.execute("select 1").fetchone()[0] == 1
        with psycopg.connect(db, connect_timeout=5) as c:
            assert c.execute("select 1").fetchone()[0] == 1
    finally:
        for c in held:
            c.close()


# --------------------------------------------------------------------------- start races, stale pids
def test_five_concurrent_first_starts_give_one_server_and_one_line_each(cli_env: dict[str, str]) -> None:
    env = {**cli_env, "PYTHONPATH": str(REPO) + os.pathsep + cli_env.get("PYTHONPATH", "")}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "cbir_pg", "db", "start"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        for _ in range(5)
    ]
    results = [(p.wait(timeout=300), *p.communicate()) for p in procs]
    for code, out, err in results:
        assert code == 0, err
        assert err.strip() == ""
        lines = out.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("database ready: "), out
    server = EmbeddedServer(Path(cli_env["CBIR_PG_HOME"]) / "pgdata")
    st = server.status()
    assert st.running
    with psycopg.connect(st.uri("postgres")) as c:
        assert c.execute("select count(*) from pg_database where datname = 'cbir'").fetchone()[0] == 1
        n = c.execute("select count(*) from pg_stat_activity where backend_type = 'checkpointer'").fetchone()[
            0
        ]
    assert n == 1


def _children(pid: int) -> list[int]:
    out = []
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_file.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat_file.parent.name))
    return out


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc to find the server's children")
def test_stale_postmaster_pid_of_another_process_is_detected_and_recovered(cli_env: dict[str, str]) -> None:
    r = _cli(cli_env, "db", "start")
    assert r.returncode == 0, r.stderr
    server = EmbeddedServer(Path(cli_env["CBIR_PG_HOME"]) / "pgdata")
    pid = server.status().pid
    assert pid
    children = _children(pid)
    os.kill(pid, signal.SIGKILL)  # a crash (or a reboot) leaves postmaster.pid and the socket file
    deadline = time.monotonic() + 60
    while any(Path(f"/proc/{c}").exists() for c in [pid, *children]) and time.monotonic() < deadline:
        time.sleep(0.1)
    other = subprocess.Popen(["sleep", "300"])  # the recycled pid now belongs to another process
    try:
        pidfile = server.pgdata / "postmaster.pid"
        lines = pidfile.read_text().splitlines()
        lines[0] = str(other.pid)
        pidfile.write_text("\n".join(lines) + "\n")

        r = _cli(cli_env, "db", "status")
        assert r.returncode == 0, r.stderr
        out = r.stdout.strip().splitlines()
        assert len(out) == 1 and "stale postmaster.pid" in out[0] and str(other.pid) in out[0], r.stdout
        assert "not this server's postmaster" in out[0]

        r = _cli(cli_env, "db", "start")
        assert r.returncode == 0, r.stderr
        out = r.stdout.strip().splitlines()
        assert len(out) == 1 and out[0].startswith("database ready:") and "stale postmaster.pid" in out[0]
        st = server.status()
        assert st.running and st.pid != other.pid
        assert other.poll() is None  # the unrelated process was left alone
        with psycopg.connect(st.uri("cbir")) as c:
            assert c.execute("select 1").fetchone()[0] == 1
    finally:
        other.kill()
        other.wait()
