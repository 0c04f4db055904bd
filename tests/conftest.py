"""Test fixtures: a real PostgreSQL with pgvector (the embedded server, or ``CBIR_PG_TEST_DSN``), one
migrated template database per session, and a fresh clone (``CREATE DATABASE x TEMPLATE t``) per test.

Real data: ``CBIR_PG_DATA_DIR`` (default ``../shared/datasets`` beside the checkout). Tests that need it
skip with a reason where it is absent, unless ``CBIR_PG_REQUIRE_DATA=1`` (set by ``.ci/run``), which
makes them fail instead.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from cbir_pg.db.database import Database

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
# Managed image folders (e.g. MedMNIST PNGs) of the test session never land in the user's data dir.
_SESSION_HOME = Path(tempfile.mkdtemp(prefix="cbs", dir="/tmp"))
os.environ["CBIR_PG_HOME"] = str(_SESSION_HOME)

REPO = Path(__file__).resolve().parent.parent


def pytest_sessionfinish(session, exitstatus) -> None:
    shutil.rmtree(_SESSION_HOME, ignore_errors=True)


# --------------------------------------------------------------------------- server and databases
@pytest.fixture(scope="session")
def pg_server_dsn() -> Iterator[str]:
    """Admin DSN (database ``postgres``) of the server the tests use."""
    external = os.environ.get("CBIR_PG_TEST_DSN")
    if external:
        yield external
        return
    from cbir_pg.db.server import EmbeddedServer

    root = Path(tempfile.mkdtemp(prefix="cbt", dir="/tmp"))
    server = EmbeddedServer(root / "pg")
    status = server.start()
    try:
        yield status.uri("postgres")
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


def _dsn_for(admin_dsn: str, dbname: str) -> str:
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    params = conninfo_to_dict(admin_dsn)
    params["dbname"] = dbname
    return make_conninfo(**params)


def create_database(admin_dsn: str, name: str, template: str | None = None) -> str:
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        q = sql.SQL("create database {}").format(sql.Identifier(name))
        if template:
            q = sql.SQL("create database {} template {}").format(
                sql.Identifier(name), sql.Identifier(template)
            )
        conn.execute(q)
    return _dsn_for(admin_dsn, name)


def drop_database(admin_dsn: str, name: str) -> None:
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name)))


@pytest.fixture(scope="session")
def template_db(pg_server_dsn: str) -> Iterator[str]:
    """Name of a database migrated to head once per session; never connect to it from a test."""
    from cbir_pg.db.migrate import migrate

    name = f"cbir_tmpl_{os.getpid()}"
    dsn = create_database(pg_server_dsn, name)
    migrate(Database(dsn))
    yield name
    drop_database(pg_server_dsn, name)


@pytest.fixture
def clone_db(pg_server_dsn: str):
    """Factory: ``clone_db(template_name) -> dsn`` of a fresh copy, dropped after the test."""
    made: list[str] = []

    def make(template: str) -> str:
        name = f"t_{uuid.uuid4().hex[:12]}"
        made.append(name)
        return create_database(pg_server_dsn, name, template=template)

    yield make
    for name in made:
        drop_database(pg_server_dsn, name)


@pytest.fixture
def db(template_db: str, clone_db) -> str:
    """DSN of a fresh, migrated database of this test's own."""
    return clone_db(template_db)


@pytest.fixture
def empty_db(pg_server_dsn: str) -> Iterator[str]:
    """DSN of an empty (unmigrated) database."""
    name = f"e_{uuid.uuid4().hex[:12]}"
    dsn = create_database(pg_server_dsn, name)
    yield dsn
    drop_database(pg_server_dsn, name)


@pytest.fixture
def conn(db: str) -> Iterator[psycopg.Connection]:
    from cbir_pg.db.connect import connect

    c = connect(db)
    yield c
    c.close()


# --------------------------------------------------------------------------- real data
def data_dir() -> Path | None:
    env = os.environ.get("CBIR_PG_DATA_DIR")
    candidates = [Path(env)] if env else []
    candidates.append(REPO.parent / "shared" / "datasets")
    for c in candidates:
        if (c / "breastmnist.npz").exists() and (c / "pneumoniamnist_subset.npz").exists():
            return c.resolve()
    return None


def require_data() -> Path:
    d = data_dir()
    if d is None:
        msg = "MedMNIST files not found: set CBIR_PG_DATA_DIR to a folder with breastmnist.npz and pneumoniamnist_subset.npz"
        if os.environ.get("CBIR_PG_REQUIRE_DATA") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    return d


@pytest.fixture(scope="session")
def medmnist_dir() -> Path:
    return require_data()


@pytest.fixture(scope="session")
def medmnist_lite0_template(pg_server_dsn: str, template_db: str, medmnist_dir: Path) -> Iterator[str]:
    """Name of a template database holding the real combined MedMNIST benchmark (BreastMNIST +
    PneumoniaMNIST, imported by the real importer), its ``efficientnet_lite0`` vectors (real ImageNet
    weights) and the HNSW index. Built once per session (a few minutes on 2 cores); tests clone it."""
    from cbir_pg.datasets import import_medmnist_benchmark
    from cbir_pg.index import build_index
    from cbir_pg.ingest.worker import run_ingest

    name = f"cbir_mm_{os.getpid()}"
    dsn = create_database(pg_server_dsn, name, template=template_db)
    import_medmnist_benchmark(Database(dsn), medmnist_dir, progress=False)
    run_ingest(Database(dsn), "efficientnet_lite0", progress=False, batch_size=64)
    build_index(Database(dsn), "efficientnet_lite0", progress=False, recall_queries=0)
    yield name
    drop_database(pg_server_dsn, name)


@pytest.fixture
def medmnist_lite0_db(medmnist_lite0_template: str, clone_db) -> str:
    """DSN of this test's own copy of :func:`medmnist_lite0_template`."""
    return clone_db(medmnist_lite0_template)


def pydicom_test_files() -> list[Path]:
    """The real DICOM files bundled in the pydicom wheel (globbed: the pydicom helper may use the network)."""
    import pydicom

    return sorted((Path(pydicom.__file__).parent / "data" / "test_files").rglob("*.dcm"))


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    """Environment for running ``cbir-pg`` subprocesses with their own embedded server home."""
    home = Path(tempfile.mkdtemp(prefix="cbh", dir="/tmp"))
    env = dict(os.environ)
    env.pop("CBIR_PG_DSN", None)
    env["CBIR_PG_HOME"] = str(home)
    env["HF_HUB_OFFLINE"] = "1"
    yield env
    from cbir_pg.db.server import EmbeddedServer

    EmbeddedServer(home / "pgdata").stop()
    shutil.rmtree(home, ignore_errors=True)
