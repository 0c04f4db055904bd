"""Fixtures and helpers for ``cbir-pg serve`` tests: logged-in HTTP clients and browser sessions, reader
roles with datasets granted, and a small two-dataset database of real MedMNIST images.

Import what a test module uses (fixtures are found by name in the module)::

    sys.path.insert(0, str(Path(__file__).resolve().parent))   # from tests/reliability: parent.parent / "serve"
    from servehelp import http_client, login, login_owner, reader_role, serve_app  # noqa: F401
    from servehelp import two_dataset_db, two_dataset_template  # noqa: F401

Logging in, for any serve test (other helpers' tests included)::

    def test_x(serve_app, reader_role, two_dataset_db):
        alice = reader_role(two_dataset_db, datasets=["breastmnist"])   # a real login role
        app = serve_app(two_dataset_db)                                   # a built app (store closed after)
        with http_client(app) as client:                                  # Host 127.0.0.1, no session
            login(client, alice)                                          # the login form, as a browser
            assert client.get("/api/models").status_code == 200
        with http_client(app) as client:
            login_owner(client, app)                                      # the one-time link (owner)

In a real browser (Playwright) against a ``cbir-pg serve`` subprocess (:func:`start_serve`, then
:func:`wait_up` or :func:`read_login_link`, and :func:`stop_serve` after): read the one-time link from its
stdout with :func:`read_login_link` and ``page.goto(link)``, or fill the form with :func:`browser_login`;
:func:`wait_true` waits for a condition in the page.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE.parent / "db"))
sys.path.insert(0, str(HERE.parent / "reliability"))

#: Debian's Chromium and the flags every browser test starts it with (no background connections: the
#: machine's closed network refuses them)
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def create_database(admin_dsn: str, name: str, template: str) -> str:
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    with psycopg.connect(admin_dsn, autocommit=True) as c:
        c.execute(
            sql.SQL("create database {} template {}").format(sql.Identifier(name), sql.Identifier(template))
        )
    return make_conninfo(**{**conninfo_to_dict(admin_dsn), "dbname": name})


def drop_database(admin_dsn: str, name: str) -> None:
    with psycopg.connect(admin_dsn, autocommit=True) as c:
        c.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name)))


#: where a test client's requests go: a loopback name the server allows by default
BASE = "http://127.0.0.1"
LINK = re.compile(r"log in as the owner \(once\) at: (\S+)")


@dataclass(frozen=True)
class Login:
    """A login role made by :func:`reader_role`: its name, its password and a psql DSN for it."""

    name: str
    password: str
    dsn: str


# --------------------------------------------------------------------------- data
@pytest.fixture(scope="session")
def two_dataset_template(
    pg_server_dsn: str, template_db: str, medmnist_dir: Path, tmp_path_factory
) -> Iterator[str]:
    """Name of a template database holding two real datasets (BreastMNIST and PneumoniaMNIST, 20
    images per split each, as PNG files, with their pixel hashes) and their ``tiny_cnn`` vectors. No dataset is granted to anyone."""
    from ingest_seed import seed_medmnist

    from cbir_pg.db.database import Database
    from cbir_pg.ingest import run_ingest

    name = f"cbir_two_{os.getpid()}"
    dsn = create_database(pg_server_dsn, name, template=template_db)
    root = tmp_path_factory.mktemp("two-datasets")
    seed_medmnist(dsn, medmnist_dir, root, flags=("breastmnist", "pneumoniamnist"), per_split=20)
    # the pixel hash an import records (an upload of a stored image is recognised by it)
    from cbir_pg.images import decode_bytes, pixel_hash

    with psycopg.connect(dsn) as c:
        rows = c.execute(
            "select i.id, d.root || '/' || i.uri from cbir.image i join cbir.dataset d on d.id = i.dataset_id"
        ).fetchall()
        for image_id, path in rows:
            h = pixel_hash(decode_bytes(Path(path).read_bytes(), path))
            c.execute("update cbir.image set content_hash = %s where id = %s", (h, image_id))
    run_ingest(Database(dsn), "tiny_cnn", batch_size=64, device="cpu", loader_workers=0, progress=False)
    yield name
    drop_database(pg_server_dsn, name)


@pytest.fixture
def two_dataset_db(two_dataset_template: str, clone_db) -> str:
    """DSN (the owner's) of this test's own copy of :func:`two_dataset_template`."""
    return clone_db(two_dataset_template)


def dataset_image_ids(db: str, dataset: str) -> list[int]:
    """The ids of a dataset's images, in order."""
    with psycopg.connect(db) as c:
        return [
            r[0]
            for r in c.execute(
                "select i.id from cbir.image i join cbir.dataset d on d.id = i.dataset_id where d.key = %s order by i.id",
                (dataset,),
            )
        ]


def stored_file(db: str, image_id: int) -> Path:
    """Where a stored image's file is."""
    with psycopg.connect(db) as c:
        root, uri = c.execute(
            "select d.root, i.uri from cbir.image i join cbir.dataset d on d.id = i.dataset_id where i.id = %s",
            (image_id,),
        ).fetchone()
    return Path(root) / uri


# --------------------------------------------------------------------------- roles
@pytest.fixture
def reader_role(pg_server_dsn: str) -> Iterator:
    """Factory: ``reader_role(db_dsn, datasets=("breastmnist",)) -> Login``: a fresh reader login made
    the way ``cbir-pg db roles add NAME --reader`` makes one, with each dataset granted as
    ``cbir-pg db roles grant-dataset`` does; dropped after the test."""
    from relhelp import dsn_with

    from cbir_pg.db.roles import add_role, grant_dataset

    made: list[tuple[str, str]] = []

    def make(db: str, datasets=(), name: str | None = None) -> Login:
        name = name or f"r_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(db, autocommit=True) as c:
            role = add_role(c, name, "reader")
            for d in datasets:
                grant_dataset(c, name, d)
        made.append((name, db))
        return Login(name, role.password, dsn_with(db, user=name, password=role.password))

    yield make
    with psycopg.connect(pg_server_dsn, autocommit=True) as c:
        for name, db in made:
            try:
                with psycopg.connect(db, autocommit=True) as dc:
                    dc.execute(sql.SQL("drop owned by {}").format(sql.Identifier(name)))
            except psycopg.Error:
                pass  # the role was dropped by the test, or the database is gone
            c.execute(sql.SQL("drop role if exists {}").format(sql.Identifier(name)))


# --------------------------------------------------------------------------- the app and clients
@pytest.fixture
def serve_app(tmp_path: Path) -> Iterator:
    """Factory: ``serve_app(db_dsn, auth=AuthConfig(...), **build_app_kwargs) -> app``, built by the
    real :func:`cbir_pg.app.serve.build_app` (``cbir_web`` prepared with the owner's DSN). Without
    ``auth``: mode ``local`` with a one-time link (``app.state.login_token``). Stores are closed after."""
    from cbir_pg.app.serve import build_app
    from cbir_pg.app.serve.auth import AuthConfig, new_login_token

    stores = []

    def make(db: str, auth: AuthConfig | None = None, **kwargs):
        auth = auth or AuthConfig(login_token=new_login_token())
        app, store = build_app(db, tmp_path / f"home{len(stores)}", auth=auth, **kwargs)
        app.state.login_token = auth.login_token
        app.state.homes = [tmp_path / f"home{len(stores)}"]
        stores.append(store)
        return app

    yield make
    for s in stores:
        s.close()


def http_client(app, base: str = BASE, **kwargs):
    """A Starlette ``TestClient`` on ``app`` with an allowed Host; errors come back as responses."""
    from fastapi.testclient import TestClient

    return TestClient(app, base_url=base, raise_server_exceptions=False, **kwargs)


def login(client, who: Login | tuple[str, str], expect: int = 303):
    """Log ``client`` in through the login form (with the Origin a browser sends); returns the response
    and asserts its status (303: logged in, redirected)."""
    name, password = (who.name, who.password) if isinstance(who, Login) else who
    r = client.post(
        "/login",
        data={"user": name, "password": password, "next": "/"},
        headers={"Origin": str(client.base_url).rstrip("/")},
        follow_redirects=False,
    )
    assert r.status_code == expect, r.text[:500]
    return r


def login_owner(client, app):
    """Log ``client`` in with the app's one-time link (the server owner's session: every dataset)."""
    r = client.get(f"/login?token={app.state.login_token}", follow_redirects=False)
    assert r.status_code == 303, r.text[:500]
    return r


def logout(client):
    return client.post(
        "/logout", headers={"Origin": str(client.base_url).rstrip("/")}, follow_redirects=False
    )


def read_login_link(log: Path, timeout_s: float = 180) -> str:
    """The one-time login link a ``cbir-pg serve`` subprocess printed to ``log`` (its stdout)."""
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        m = LINK.search(log.read_text(errors="replace")) if log.exists() else None
        if m:
            return m.group(1)
        time.sleep(0.2)
    raise AssertionError(f"no login link printed: {log.read_text(errors='replace')[-2000:]}")


def browser_login(page, base: str, who: Login) -> None:
    """Log a Playwright ``page`` in through the login form as ``who``."""
    page.goto(base + "/login")
    page.fill("#user", who.name)
    page.fill("#password", who.password)
    with page.expect_navigation():
        page.click("#go")
    assert page.query_selector("#who") is not None, f"login failed: {page.url} {page.content()[:600]}"


# --------------------------------------------------------------------------- a served subprocess
def free_port() -> int:
    """A loopback port nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_serve(db: str, log: Path, *args: str, home: Path | None = None) -> tuple[subprocess.Popen, str]:
    """``cbir-pg --dsn DB serve --port P ARGS`` on a free loopback port, its output in ``log`` (with
    ``home``: its ``CBIR_PG_HOME``); the process and its base URL. Not waited for: see :func:`wait_up`."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO), **({"CBIR_PG_HOME": str(home)} if home else {})}
    proc = subprocess.Popen(
        [sys.executable, "-m", "cbir_pg", "--dsn", db, "serve", "--port", str(port), *args],
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    return proc, f"http://127.0.0.1:{port}"


def wait_up(proc: subprocess.Popen, base: str, log: Path, timeout_s: float = 180) -> None:
    """Wait until the served login form answers 200; fail the test (with the log's tail) if the process
    ends or ``timeout_s`` passes first."""
    import httpx

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(base + "/login", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"cbir-pg serve did not come up: {log.read_text()[-2000:]}")
        time.sleep(0.5)


def stop_serve(proc: subprocess.Popen) -> None:
    """Stop a served process as Ctrl-C would (SIGINT), killing it if it has not ended in 30 s."""
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


def wait_true(page, expression: str) -> None:
    """Wait (up to 2 minutes) until ``expression`` is true in the page. Polled from here: Playwright's
    ``wait_for_function`` polls by evaluating a string in the page, which the pages'
    Content-Security-Policy (no unsafe-eval) rightly refuses."""
    for _ in range(1200):
        if page.evaluate(expression):
            return
        page.wait_for_timeout(100)
    raise AssertionError(f"never true in the page: {expression}")
