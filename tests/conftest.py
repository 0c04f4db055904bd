"""Test fixtures: a real PostgreSQL with pgvector (the embedded server, or ``CBIR_PG_TEST_DSN``), one
migrated template database per session, and a fresh clone (``CREATE DATABASE x TEMPLATE t``) per test.

Parallel runs (``pytest -n 2``, pytest-xdist, what ``make test`` runs): the controller process starts
one embedded server before the workers start and hands it to them as ``CBIR_PG_TEST_DSN``; each worker
migrates its own template (named by its pid) and clones per test, so workers never share a database.
The one expensive database, the real-MedMNIST template (:func:`medmnist_lite0_template`), is built once
for the whole run by whichever worker asks first, under a PostgreSQL advisory lock, and cloned by all.
``--dist loadfile`` keeps a module's tests (and its module-scoped fixtures) on one worker.

Real data: ``CBIR_PG_DATA_DIR`` (default, only when the variable is unset: ``../shared/datasets`` beside
the checkout) holding ``breastmnist.npz`` and ``pneumoniamnist.npz`` or ``pneumoniamnist_subset.npz``.
An explicit ``CBIR_PG_DATA_DIR`` is the only place looked at. Tests that need the data
skip with a reason where it is absent, unless ``CBIR_PG_REQUIRE_DATA=1`` (set by ``.ci/run``), which
makes them fail instead.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from cbir_pg.db.database import Database

# pytest-xdist gives its workers COLUMNS/LINES of a terminal they do not have: the CLI's piped-output
# tests need what a plain (non-xdist) run has, no COLUMNS unless a test sets it.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.pop("COLUMNS", None)
    os.environ.pop("LINES", None)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
# Managed image folders (e.g. MedMNIST PNGs) of the test session never land in the user's data dir.
_SESSION_HOME = Path(tempfile.mkdtemp(prefix="cbs", dir="/tmp"))
os.environ["CBIR_PG_HOME"] = str(_SESSION_HOME)

REPO = Path(__file__).resolve().parent.parent
# serve fixtures (logged-in clients, reader roles, the two-dataset database) for every test folder
sys.path.insert(0, str(Path(__file__).resolve().parent / "serve"))
pytest_plugins = ["servehelp"]


#: set by the xdist controller for its workers: the id of this run (names the databases they share)
SHARED_RUN = "CBIR_PG_TEST_SHARED_RUN"


def _is_xdist_controller(config) -> bool:
    return (getattr(config.option, "numprocesses", None) or 0) > 0 and not hasattr(config, "workerinput")


def pytest_configure(config) -> None:
    """The xdist controller names the run and starts the one server its workers share (unless
    ``CBIR_PG_TEST_DSN`` names one); workers inherit both through the environment when they start."""
    if not _is_xdist_controller(config):
        return
    os.environ[SHARED_RUN] = uuid.uuid4().hex[:8]
    config._cbir_pg_shared = None
    if os.environ.get("CBIR_PG_TEST_DSN"):
        return
    from cbir_pg.db.server import EmbeddedServer

    root = Path(tempfile.mkdtemp(prefix="cbx", dir="/tmp"))
    server = EmbeddedServer(root / "pg")
    status = server.start()
    config._cbir_pg_shared = (server, root)
    os.environ["CBIR_PG_TEST_DSN"] = status.uri("postgres")


def pytest_unconfigure(config) -> None:
    """The controller ends what the workers shared: its own server, or on a given server the shared
    real-data template."""
    if not hasattr(config, "_cbir_pg_shared"):
        return
    run = os.environ.pop(SHARED_RUN)
    if config._cbir_pg_shared is None:
        drop_database(os.environ["CBIR_PG_TEST_DSN"], f"cbir_mm_{run}")
        return
    server, root = config._cbir_pg_shared
    server.stop()
    shutil.rmtree(root, ignore_errors=True)
    os.environ.pop("CBIR_PG_TEST_DSN", None)


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
    """The MedMNIST folder: ``CBIR_PG_DATA_DIR`` when set (an explicit variable wins, no fallback),
    else ``../shared/datasets``; ``None`` when it lacks either file."""
    from cbir_pg.datasets import MEDMNIST_BENCHMARK_FILES, medmnist_files_in

    env = os.environ.get("CBIR_PG_DATA_DIR")
    c = Path(env) if env else REPO.parent / "shared" / "datasets"
    return c.resolve() if len(medmnist_files_in(c)) == len(MEDMNIST_BENCHMARK_FILES) else None


def medmnist_file(d: Path, flag: str) -> Path:
    """The file of ``flag`` (``breastmnist`` or ``pneumoniamnist``) in the data folder ``d``; PneumoniaMNIST
    may be the full ``pneumoniamnist.npz`` or ``pneumoniamnist_subset.npz``."""
    from cbir_pg.datasets import medmnist_files_in

    return medmnist_files_in(d)[flag]


def require_data() -> Path:
    d = data_dir()
    if d is None:
        where = os.environ.get("CBIR_PG_DATA_DIR") or str(REPO.parent / "shared" / "datasets")
        msg = (
            f"MedMNIST files not found in {where}: set CBIR_PG_DATA_DIR to a folder with breastmnist.npz and "
            "pneumoniamnist.npz (or pneumoniamnist_subset.npz)"
        )
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

    def build(name: str) -> None:
        db = Database(create_database(pg_server_dsn, name, template=template_db))
        import_medmnist_benchmark(db, medmnist_dir, progress=False)
        run_ingest(db, "efficientnet_lite0", progress=False, batch_size=64)
        build_index(db, "efficientnet_lite0", progress=False, recall_queries=0)
        db.close()

    run = os.environ.get(SHARED_RUN)
    if run is None:  # this process owns the server or its databases: build, use, drop
        name = f"cbir_mm_{os.getpid()}"
        build(name)
        yield name
        drop_database(pg_server_dsn, name)
        return
    # xdist: one build for the whole run; the lock holder builds under a temporary name and renames it,
    # so a worker that finds the name finds it complete; the shared server goes at the end of the run
    name = f"cbir_mm_{run}"
    with psycopg.connect(pg_server_dsn, autocommit=True) as lock:
        lock.execute("select pg_advisory_lock(hashtext(%s))", (name,))
        if lock.execute("select 1 from pg_database where datname = %s", (name,)).fetchone() is None:
            build(name + "_b")
            lock.execute(
                sql.SQL("alter database {} rename to {}").format(
                    sql.Identifier(name + "_b"), sql.Identifier(name)
                )
            )
        lock.execute("select pg_advisory_unlock(hashtext(%s))", (name,))
    yield name


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
