"""``cbir-pg db psql``: run psql (shipped with the embedded server) without exposing the password.

The password never goes on psql's command line (``ps`` shows every process's arguments to every local
user): it is taken out of the DSN and written to a passfile readable only by us (mode 0600, in a 0700
temporary folder, removed when psql exits), and ``PGPASSFILE`` points psql at it. Every other argument
is passed to psql as given (``cbir-pg db psql -c "select 1"``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cbir_pg.db.database import Database


def psql_executable() -> str:
    from cbir_pg.db.server import bin_dir

    exe = bin_dir() / "psql"
    return str(exe) if exe.exists() else (shutil.which("psql") or "psql")


def _split_password(dsn: str) -> tuple[str, str | None]:
    """``dsn`` without its password (key=value form), and the password (``None`` when it has none)."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    params = conninfo_to_dict(dsn)
    password = params.pop("password", None)
    return make_conninfo(**params), (str(password) if password is not None else None)


def _passfile_line(password: str) -> str:
    # ~/.pgpass syntax: ':' and '\\' in a field are escaped with '\\'; '*' matches any host/port/db/user
    escaped = password.replace("\\", "\\\\").replace(":", "\\:")
    return f"*:*:*:*:{escaped}\n"


def run_psql(db: Database, args: list[str] | None = None) -> int:
    """Run psql on ``db`` with ``args``; returns its exit status."""
    from cbir_pg.db.connect import check_dsn

    conninfo, password = _split_password(check_dsn(db.dsn))
    env = dict(os.environ)
    tmp: str | None = None
    try:
        if password is not None:
            tmp = tempfile.mkdtemp(prefix="cbir-pg-psql-")  # 0700
            passfile = Path(tmp) / "pgpass"
            fd = os.open(passfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(_passfile_line(password))
            env["PGPASSFILE"] = str(passfile)
            env.pop("PGPASSWORD", None)
        return subprocess.call([psql_executable(), "-d", conninfo, *(args or [])], env=env)
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
