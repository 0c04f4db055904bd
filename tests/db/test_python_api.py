"""The Python façade: docs/python-api.md runs as written (every ``python`` block, in order, in one
namespace) on a database of real small images embedded with ``tiny_cnn``; ``import cbir_pg`` stays cheap."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from test_search import tiny  # noqa: F401  (fixture: tiny_cnn vectors of real PNG files)

from cbir_pg.db.database import Database

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "python-api.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def test_python_api_walkthrough_runs_as_written(db: str, tiny, monkeypatch, capsys) -> None:  # noqa: F811
    monkeypatch.setenv("CBIR_PG_DSN", db)
    blocks = python_blocks(DOC.read_text(encoding="utf-8"))
    assert len(blocks) >= 5
    ns: dict = {}
    for i, code in enumerate(blocks):
        exec(compile(code, f"{DOC.name}[block {i + 1}]", "exec"), ns)  # noqa: S102
    assert ns["model"] == "tiny_cnn"
    hits, result, board = ns["hits"], ns["result"], ns["board"]
    assert isinstance(hits, pd.DataFrame) and len(hits) == 5 and list(hits["rank"]) == [1, 2, 3, 4, 5]
    assert hits.similarity.is_monotonic_decreasing
    assert list(result.columns) == ["run_id", "model", "mode", "average", "p1", "p3", "p5", "p10"]
    assert set(board.model) == {"tiny_cnn"}
    assert "tiny_cnn" in capsys.readouterr().out


def test_client_errors_and_dsn(db: str, tiny) -> None:  # noqa: F811
    import cbir_pg
    from cbir_pg.errors import NotFoundError

    client = cbir_pg.connect(db)
    assert client.dsn == db and "Client(" in repr(client)
    with pytest.raises(NotFoundError, match="no vectors for biomedclip yet"):
        client.search(1, "biomedclip")
    with pytest.raises(NotFoundError, match="image 999999 does not exist"):
        client.image_path(999999)
    assert client.sql("select 1 as one").one.tolist() == [1]


def test_import_cbir_pg_is_cheap() -> None:
    code = (
        "import sys, cbir_pg\n"
        "cbir_pg.connect, cbir_pg.Client\n"
        "print(sorted(m for m in ('torch', 'pandas', 'matplotlib', 'psycopg', 'eval.retrieval') if m in sys.modules))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_moved_files_are_found_through_cbir_pg_data_root(db: str, tiny, tmp_path, monkeypatch) -> None:  # noqa: F811
    """The compose worker's case: the files live under another path than the stored root."""
    import cbir_pg
    from cbir_pg.search import load_image_rgb

    syn, root, _ = tiny
    moved = tmp_path / "mounted"
    root.rename(moved)
    with pytest.raises(Exception, match="no such file"):
        load_image_rgb(Database(db), syn.ids[0])
    monkeypatch.setenv("CBIR_PG_DATA_ROOT", f"{root}={moved}")
    assert load_image_rgb(Database(db), syn.ids[0]).shape == (32, 32, 3)
    client = cbir_pg.connect(db)
    path = client.image_path(syn.ids[0])
    assert path.is_file() and str(path).startswith(str(moved))
    # the moved file is recognised as the stored image (same neighbours as a search by its id)
    assert list(client.search(path, "tiny_cnn", k=3).image_id) == list(
        client.search(syn.ids[0], "tiny_cnn", k=3).image_id
    )
