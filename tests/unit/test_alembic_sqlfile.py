"""Alembic revisions read their SQL from alembic/sql/*.sql through alembic/sqlfile.read_sql."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ALEMBIC = Path(__file__).resolve().parents[2] / "alembic"


def _sqlfile():
    spec = importlib.util.spec_from_file_location("sqlfile", ALEMBIC / "sqlfile.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_read_sql_reads_files_of_the_sql_folder(tmp_path: Path) -> None:
    mod = _sqlfile()
    assert mod.SQL_DIR == ALEMBIC / "sql"
    mod.SQL_DIR = tmp_path
    (tmp_path / "0002_x.sql").write_text("alter table cbir.image add column y int;\n")
    assert mod.read_sql("0002_x.sql") == "alter table cbir.image add column y int;\n"
    with pytest.raises(FileNotFoundError, match="0003_missing.sql"):
        mod.read_sql("0003_missing.sql")
    for bad in ("../env.py", "0002_x.py", "sub/0002_x.sql"):
        with pytest.raises(ValueError):
            mod.read_sql(bad)


def test_env_and_template_use_it() -> None:
    assert "sys.path.insert(0, str(Path(__file__).resolve().parent))" in (ALEMBIC / "env.py").read_text()
    assert "from sqlfile import read_sql" in (ALEMBIC / "script.py.mako").read_text()
