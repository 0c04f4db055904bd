"""Alembic revisions read their SQL from alembic/sql/*.sql through alembic/sqlfile (read_sql, sql_steps)."""

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


def test_sql_steps_names_both_files_at_load_time(tmp_path: Path) -> None:
    mod = _sqlfile()
    mod.SQL_DIR = tmp_path
    (tmp_path / "0002_x.sql").write_text("select 1;\n")
    with pytest.raises(FileNotFoundError, match="0002_x.down.sql"):
        mod.sql_steps("0002_x")
    (tmp_path / "0002_x.down.sql").write_text("select 2;\n")
    upgrade, downgrade = mod.sql_steps("0002_x")
    assert (upgrade.__name__, downgrade.__name__) == ("0002_x", "0002_x_down")


def test_env_and_template_use_it() -> None:
    assert "sys.path.insert(0, str(Path(__file__).resolve().parent))" in (ALEMBIC / "env.py").read_text()
    assert "from sqlfile import sql_steps" in (ALEMBIC / "script.py.mako").read_text()
    for revision in sorted((ALEMBIC / "versions").glob("00*.py"))[1:]:
        assert f'sql_steps("{revision.stem}")' in revision.read_text(), revision.name
