"""The first hour of a new user (issue 26, items 10, 13, 14, 16, 17, 19): what the commands say when
something is new, misspelt or missing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import dbhelp
import psycopg
import pytest

REPO = Path(__file__).resolve().parents[2]


def cli(db: str, *args: str, code: int = 0) -> str:
    return dbhelp.cli(db, *args, code=code, columns=160).output


def run(*args: str, env: dict[str, str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    return dbhelp.cbir_pg(*args, env=env, cwd=cwd)


# item 13
def test_roles_list_takes_format_and_has_a_header(db: str) -> None:
    cli(db, "db", "roles", "add", "t_first_hour", "--reader")
    try:
        rows = [json.loads(ln) for ln in cli(db, "db", "roles", "list", "--format", "json").splitlines()]
        mine = [r for r in rows if r["name"] == "t_first_hour"]
        assert mine == [{"name": "t_first_hour", "kind": "reader", "connection_limit": 10}]
        table = cli(db, "db", "roles", "list").splitlines()
        header = next(ln for ln in table if ln.strip())
        assert header.split() == ["role", "kind", "connection", "limit"]
        assert any("t_first_hour" in ln and "10 connections" in ln for ln in table)
        assert "\t" not in "\n".join(table)
        csv_lines = cli(db, "db", "roles", "list", "--format", "csv").splitlines()
        assert csv_lines[0] == "name,kind,connection_limit"
    finally:
        cli(db, "db", "roles", "drop", "t_first_hour")


# item 16
def test_a_misspelt_model_suggests_the_close_one(db: str) -> None:
    r = dbhelp.cli(db, "search", "--image-id", "1", "--model", "efficientnet_lite", code=1)
    msg = str(r.exception) if r.exception and not isinstance(r.exception, SystemExit) else r.output
    assert "did you mean 'efficientnet_lite0' or 'efficientnet_lite2'?" in msg


def test_an_unknown_dataset_lists_the_valid_ones(db: str) -> None:
    from test_sql_api import build, make_synthetic

    from cbir_pg.db.database import Database
    from cbir_pg.errors import NotFoundError
    from cbir_pg.eval.retrieval import evaluate_retrieval

    make_synthetic(db, model="tiny_cnn", dim=16, n=30)
    build(db, model="tiny_cnn")
    with psycopg.connect(db, autocommit=True) as c:
        c.execute("insert into cbir.dataset (key, kind, name) values ('breastmnist', 'medmnist', 'B')")
        known = ", ".join(r[0] for r in c.execute("select key from cbir.dataset order by key"))
    assert known == "alpha, beta, breastmnist"
    with pytest.raises(NotFoundError) as info:
        evaluate_retrieval(Database(db), "tiny_cnn", datasets=["nih14"], progress=False)
    assert str(info.value) == f"unknown dataset(s): 'nih14'; known: {known}"
    with pytest.raises(NotFoundError, match=r"'breastmnst' \(did you mean 'breastmnist'\?\); known: "):
        evaluate_retrieval(Database(db), "tiny_cnn", datasets=["breastmnst"], progress=False)


def test_usage_mistakes_exit_2(db: str) -> None:
    for args, fragment in (
        (["search", "--image-id", "1", "--model", "tiny_cnn", "--split", "training"], "did you mean 'train'"),
        (["search", "--image-id", "1", "--model", "tiny_cnn", "-k", "0"], "-k"),
        (["eval", "retrieval", "--model", "tiny_cnn", "--query-split", "test,vall"], "did you mean 'val'"),
        (["ingest", "--model", "tiny_cnn", "--split", "Test"], "not a split"),
    ):
        out = dbhelp.cbir_pg("--dsn", db, *args, timeout=120)
        assert out.returncode == 2, (args, out.stderr)
        assert out.stderr.startswith("error: ") and fragment in out.stderr and "Traceback" not in out.stderr


# item 17
def test_models_list_marks_test_encoders_and_counts_vectors(db: str) -> None:
    from test_sql_api import build, make_synthetic

    make_synthetic(db, model="tiny_cnn", dim=16, n=30)
    build(db, model="tiny_cnn")
    rows = {
        r["key"]: r
        for r in map(json.loads, cli(db, "models", "list", "--no-weights", "--format", "json").splitlines())
    }
    assert rows["tiny_cnn"]["test_encoder"] is True and rows["efficientnet_lite0"]["test_encoder"] is False
    assert rows["tiny_cnn"]["stored_vectors"] == 30
    assert rows["efficientnet_lite0"]["stored_vectors"] == 0
    table = cli(db, "models", "list", "--no-weights")
    assert "tiny_cnn *" in table and "* test encoder: random seeded weights" in table
    assert "efficientnet_lite0 *" not in table


# item 19
def test_first_use_of_the_default_home_says_so_once() -> None:
    base = Path(tempfile.mkdtemp(prefix="cfu", dir="/tmp"))
    env = {k: v for k, v in os.environ.items() if k not in ("CBIR_PG_HOME", "CBIR_PG_DSN")}
    env.update(XDG_DATA_HOME=str(base), PYTHONPATH=str(REPO))
    try:
        first = run("db", "start", env=env)
        assert first.returncode == 0, first.stderr
        home = base / "cbir-pg"
        lines = [ln for ln in first.stderr.splitlines() if "first use" in ln]
        assert lines == [
            f"cbir-pg: first use: creating and starting a database in {home} (set CBIR_PG_HOME to keep it "
            "elsewhere; cbir-pg db stop stops it)"
        ]
        again = run("db", "status", env=env)
        assert again.returncode == 0 and "first use" not in again.stderr
        with_home = run("db", "status", env={**env, "CBIR_PG_HOME": str(base / "other")})
        assert "first use" not in with_home.stderr
    finally:
        run("db", "stop", env=env)
        shutil.rmtree(base, ignore_errors=True)


# item 14
def test_plain_alembic_current_uses_the_embedded_server(cli_env: dict[str, str]) -> None:
    env = {**cli_env, "PYTHONPATH": str(REPO)}
    assert run("db", "migrate", env=env).returncode == 0
    from cbir_pg.db.migrate import head_revision

    out = subprocess.run(
        [sys.executable, "-m", "alembic", "current"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr and head_revision() in out.stdout


# item 10
def _torch_index(build: str, url: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """``tools/torch_index.sh PYTHON BUILD URL``: the pip options it prints, its reasons on stderr."""
    return subprocess.run(
        ["sh", str(REPO / "tools" / "torch_index.sh"), sys.executable, build, url],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def test_make_says_why_it_installs_the_big_torch_build(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin"}  # no nvidia-smi
    out = _torch_index("auto", "http://127.0.0.1:9/whl/cpu", env)
    assert out.returncode == 0 and out.stdout.strip() == ""  # the default index: no --index-url
    said = " ".join(out.stderr.split())
    assert "did not answer" in said and "6.7 GB" in said and "make TORCH_BUILD=cpu" in said
    cpu = _torch_index("cpu", "http://127.0.0.1:9/whl/cpu", env)
    assert cpu.stdout.strip() == "--index-url http://127.0.0.1:9/whl/cpu" and "TORCH_BUILD=cpu" in cpu.stderr
    bad = _torch_index("gpu", "x")
    assert bad.returncode == 2 and "use auto, cpu or pypi" in bad.stderr


# item 11
def test_breastmnist_class_1_is_named_benign_or_normal_also_in_an_old_database(db: str) -> None:
    from cbir_pg.db.database import Database
    from cbir_pg.db.migrate import downgrade, migrate

    downgrade(Database(db), "0007")  # to the revision before 0010
    with psycopg.connect(db, autocommit=True) as c:  # what an import before this revision stored
        c.execute("insert into cbir.dataset (key, kind, name) values ('breastmnist', 'medmnist', 'B')")
        c.execute(
            "insert into cbir.label (key, modality, region, finding, kind) "
            "values ('US/breast/normal', 'US', 'breast', 'normal', 'anatomical'), "
            "('XR/chest/normal', 'XR', 'chest', 'normal', 'anatomical')"
        )
        c.execute(
            "insert into cbir.label_map (dataset_id, source_label, label_id) select d.id, 'normal, benign', l.id "
            "from cbir.dataset d, cbir.label l where l.key = 'US/breast/normal'"
        )
    migrate(Database(db))
    with psycopg.connect(db) as c:
        keys = [r[0] for r in c.execute("select key from cbir.label order by key")]
    assert keys == ["US/breast/benign_or_normal", "XR/chest/normal"]  # the chest class keeps its name
    from cbir_pg.datasets.harmonise import derive_kind
    from cbir_pg.datasets.medmnist import FLAGS

    assert FLAGS["breastmnist"][3]["normal, benign"] == "benign_or_normal"
    assert derive_kind("US/breast/benign_or_normal") == "anatomical"
    downgrade(Database(db), "0007")  # to the revision before 0010
    with psycopg.connect(db) as c:
        assert [r[0] for r in c.execute("select key from cbir.label order by key")][0] == "US/breast/normal"


# item 12
def test_the_demos_report_draws_every_model_and_compares_them(db: str, tmp_path: Path) -> None:
    import numpy as np
    from psycopg import sql
    from test_sql_api import make_synthetic

    from cbir_pg.app.demo import DemoResult, _Demo
    from cbir_pg.db import identifiers
    from cbir_pg.db.database import Database
    from cbir_pg.eval.retrieval import evaluate_retrieval

    syn = make_synthetic(db, model="tiny_cnn", dim=16, n=300)
    rng = np.random.default_rng(5)  # a second model over the same images: noisier vectors
    second = syn.vectors + 0.5 * rng.normal(size=syn.vectors.shape).astype(np.float32)
    with psycopg.connect(db) as conn:
        conn.execute(
            "insert into cbir.encoder (key, family, dim, vector_type, config, config_hash, table_name)"
            " values ('tiny_vit', 'synthetic', 16, 'vector', '{}', 'synthetic', 'embedding_tiny_vit')"
        )
        conn.execute(identifiers.create_embedding_table("tiny_vit", 16))
        with conn.cursor().copy(
            sql.SQL("copy {} (image_id, embedding) from stdin").format(
                identifiers.embedding_table("tiny_vit")
            )
        ) as cp:
            for img, v in zip(syn.ids, second, strict=True):
                cp.write_row((img, "[" + ",".join(f"{x:.8g}" for x in v) + "]"))
    for model in ("tiny_cnn", "tiny_vit"):
        evaluate_retrieval(Database(db), model, mode="exact", progress=False)
    result = DemoResult(dsn=db, model="tiny_cnn", files={}, fuse_with="tiny_vit")
    demo = _Demo(
        db=Database(db),
        files={},
        model="tiny_cnn",
        fuse_with="tiny_vit",
        out=tmp_path / "report",
        batch_size=64,
        device="cpu",
        progress=False,
        result=result,
    )
    demo.do_report()
    names = sorted(p.name for p in (tmp_path / "report").glob("*.png"))
    assert "fig1_models.png" in names
    for model in ("tiny_cnn", "tiny_vit"):
        assert f"fig3a_class_p1_vs_size_{model}.png" in names and f"fig5_tsne_{model}.png" in names
    page = (tmp_path / "report" / "index.html").read_text()
    assert "<h2>tiny_cnn</h2>" in page and "<h2>tiny_vit</h2>" in page and "Models compared" in page
    assert "<th>P@1 micro</th>" in page and "p1_micro" not in page
