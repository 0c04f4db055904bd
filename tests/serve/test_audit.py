"""The audit trail of `cbir-pg serve` (issue 22, section 1): every page view, search, upload, thumbnail
and pixel fetch and every login is an append-only row (who, when, what, which image ids, which filters)
that no user can change or delete; the owner reads it with `cbir-pg audit`; uploaded pixels are never
stored; the one-time token is never written there."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from servehelp import dataset_image_ids as image_ids  # noqa: E402
from servehelp import http_client, login, login_owner, logout, stored_file  # noqa: E402

pytestmark = pytest.mark.real_data
MODEL = "tiny_cnn"
REPO = Path(__file__).resolve().parents[2]


def audit_rows(db: str) -> list[dict]:
    with psycopg.connect(db) as c:
        cur = c.execute(
            "select actor, auth, host(address) as address, method, path, action, status, image_ids, filters"
            " from cbir.audit_log order by id"
        )
        names = [d.name for d in cur.description]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def stored_png(db: str, image_id: int) -> bytes:
    return stored_file(db, image_id).read_bytes()


@pytest.fixture
def session_log(serve_app, reader_role, two_dataset_db: str):
    """A reader's session (login, a page, a search, an image page, a thumbnail, pixels, an upload, a
    failed login, logout) and an owner's; returns (db, alice, the responses' neighbour ids, app)."""
    alice = reader_role(two_dataset_db, datasets=["breastmnist"])
    app = serve_app(two_dataset_db)
    q = image_ids(two_dataset_db, "breastmnist")[0]
    with http_client(app) as client:
        login(client, (alice.name, "not-her-password"), expect=401)
        login(client, alice)
        client.get("/")
        hits = client.get(f"/api/images/{q}/similar", params={"model": MODEL, "k": 7, "split": "test"}).json()
        client.get(f"/images/{q}")
        client.get(f"/api/images/{q}/thumbnail")
        client.get(f"/api/images/{q}/pixels")
        up = client.post(
            "/api/search",
            files={"file": ("u.png", stored_png(two_dataset_db, q), "image/png")},
            data={"model": MODEL, "k": "5"},
        ).json()
        logout(client)
    with http_client(app) as client:
        login_owner(client, app)
        client.get("/results")
    return two_dataset_db, alice, hits, up, app


def test_every_view_search_upload_and_fetch_is_one_row(session_log) -> None:
    db, alice, hits, up, app = session_log
    rows = audit_rows(db)
    mine = [r for r in rows if r["actor"] == alice.name]
    assert [r["action"] for r in mine] == [
        "login_failed",
        "login",
        "page_view",
        "search",
        "page_view",
        "thumbnail",
        "pixels",
        "upload",
        "logout",
    ]
    assert {r["auth"] for r in mine} == {"password"} and {r["address"] for r in mine} == {None}
    assert mine[0]["status"] == 401 and all(r["status"] in (200, 303) for r in mine[1:])
    search = mine[3]
    q = hits["query"]["image_id"]
    assert search["path"] == f"/api/images/{q}/similar"
    assert search["image_ids"] == [q, *(h["image_id"] for h in hits["neighbours"])]
    assert search["filters"] == {"model": MODEL, "k": 7, "split": "test"}
    assert mine[5]["image_ids"] == [q] and mine[6]["image_ids"] == [q]
    image_page = mine[4]
    assert (
        image_page["path"] == f"/images/{q}"
        and image_page["image_ids"][0] == q
        and len(image_page["image_ids"]) == 9
    )
    upload = mine[7]
    assert upload["image_ids"] == [up["query"]["image_id"], *(h["image_id"] for h in up["neighbours"])]
    assert upload["filters"] == {"model": MODEL, "k": 5, "stored": True}
    owner = [r for r in rows if r["actor"] == "owner"]
    assert [r["action"] for r in owner] == ["login", "page_view"] and owner[0]["auth"] == "token"
    # the one-time token and the passwords are written nowhere in the trail
    text = json.dumps(rows, default=str)
    assert app.state.login_token not in text and alice.password not in text and "not-her-password" not in text


def test_uploaded_pixels_are_never_stored(session_log) -> None:
    db, *_ = session_log
    with psycopg.connect(db) as c:
        # no column of the audit trail can hold pixels; no image row was added
        types = {
            r[0]
            for r in c.execute(
                "select data_type from information_schema.columns where table_schema = 'cbir' and table_name = 'audit_log'"
            )
        }
        assert "bytea" not in types
        assert c.execute("select count(*) from cbir.image").fetchone()[0] == 120


@pytest.mark.parametrize(
    "statement",
    [
        "select * from cbir.audit_log",
        "update cbir.audit_log set actor = 'someone'",
        "delete from cbir.audit_log",
        "truncate cbir.audit_log",
        "insert into cbir.audit_log (actor, auth, method, path, action) values ('x', 'none', 'GET', '/', 'forged')",
    ],
)
def test_a_reader_cannot_read_change_or_delete_the_trail(session_log, statement: str) -> None:
    db, alice, *_ = session_log
    with psycopg.connect(alice.dsn) as c, pytest.raises(psycopg.errors.InsufficientPrivilege):
        c.execute(statement)


@pytest.mark.parametrize(
    "statement",
    ["update cbir.audit_log set actor = 'someone'", "delete from cbir.audit_log", "truncate cbir.audit_log"],
)
def test_not_even_the_owner_or_the_server_changes_a_row(session_log, statement: str, tmp_path: Path) -> None:
    from cbir_pg.app.serve.access import prepare_web_role

    db, *_ = session_log
    before = audit_rows(db)
    for dsn in (db, prepare_web_role(db, tmp_path)):
        with psycopg.connect(dsn) as c, pytest.raises(psycopg.errors.InsufficientPrivilege):
            c.execute(statement)
    assert audit_rows(db) == before


def test_cbir_pg_audit_formats_and_filters(session_log) -> None:
    db, alice, *_ = session_log

    def audit(*args: str) -> str:
        out = subprocess.run(
            [sys.executable, "-m", "cbir_pg", "--dsn", db, "audit", *args],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            timeout=120,
        )
        assert out.returncode == 0, out.stderr
        return out.stdout

    n = len(audit_rows(db))
    lines = [json.loads(x) for x in audit("--format", "json").splitlines()]
    assert len(lines) == n and {x["actor"] for x in lines} == {alice.name, "owner"}
    assert set(lines[0]) == {
        "at",
        "actor",
        "auth",
        "address",
        "action",
        "method",
        "path",
        "status",
        "image_ids",
        "filters",
    }
    searches = [x for x in lines if x["action"] == "search"]
    assert searches[0]["filters"]["model"] == MODEL and len(searches[0]["image_ids"]) == 8
    mine = list(csv.DictReader(io.StringIO(audit("--format", "csv", "--user", alice.name))))
    assert len(mine) == n - 2 and {r["actor"] for r in mine} == {alice.name}
    assert audit("--format", "json", "--since", "2999-01-01") == ""
    assert audit("--format", "json", "--until", "2000-01-01") == ""
    table = audit("--user", "owner")
    assert "token" in table and "/results" in table


@pytest.mark.parametrize("sync", ["", "1"])
def test_a_search_row_is_committed_before_its_response_in_either_commit_mode(
    serve_app, two_dataset_db: str, monkeypatch, sync: str
) -> None:
    """The audit row's commit does not wait for the disk unless CBIR_PG_AUDIT_SYNC=1 (docs/serve.md), but
    in both modes it is committed, and visible to every reader, before the response is sent."""
    monkeypatch.setenv("CBIR_PG_AUDIT_SYNC", sync)
    app = serve_app(two_dataset_db)
    q = image_ids(two_dataset_db, "breastmnist")[0]
    with http_client(app) as client:
        login_owner(client, app)
        before = len(audit_rows(two_dataset_db))
        r = client.get(f"/api/images/{q}/similar", params={"model": MODEL, "k": 3})
        assert r.status_code == 200, r.text[:300]
        rows = audit_rows(two_dataset_db)[before:]  # read at once, on another connection
    assert [(x["action"], x["status"], x["image_ids"][0]) for x in rows] == [("search", 200, q)]
    assert rows[0]["image_ids"][1:] == [h["image_id"] for h in r.json()["neighbours"]]


def test_every_response_has_the_security_headers_and_none_leaves_without_its_audit_row(
    serve_app, two_dataset_db: str
) -> None:
    """The guards (plain ASGI middleware, cbir_pg/app/serve/guards.py): the security headers on a search,
    a page, an error and a refused cross-origin post, a route's own Cache-Control kept; and when the audit
    row cannot be written, the route's response is replaced by a 503 that reveals none of it."""
    from cbir_pg.app.serve.guards import SECURITY_HEADERS

    app = serve_app(two_dataset_db)
    q = image_ids(two_dataset_db, "breastmnist")[0]
    search = (f"/api/images/{q}/similar", {"model": MODEL, "k": 5})

    def has_headers(r, cache: str = "no-store") -> None:
        for name, value in SECURITY_HEADERS.items():
            assert r.headers[name] == (cache if name == "Cache-Control" else value), (r.url, name)

    with http_client(app) as client:
        login_owner(client, app)
        ok = client.get(search[0], params=search[1])
        assert ok.status_code == 200 and len(ok.json()["neighbours"]) == 5
        has_headers(ok)
        has_headers(client.get("/"))
        has_headers(client.get("/api/images/999999999"))
        has_headers(client.get(f"/api/images/{q}/thumbnail"), cache="private, max-age=86400")
        refused = client.post("/logout", headers={"Origin": "https://elsewhere.example"})
        assert refused.status_code == 403
        has_headers(refused)
        rows = len(audit_rows(two_dataset_db))
        with psycopg.connect(two_dataset_db, autocommit=True) as c:
            c.execute("revoke insert on cbir.audit_log from cbir_web")
        r = client.get(search[0], params=search[1])
        assert r.status_code == 503 and r.json() == {
            "error": "the audit trail cannot be written",
            "status": 503,
        }
        assert str(ok.json()["neighbours"][0]["image_id"]) not in r.text
        has_headers(r)
        with psycopg.connect(two_dataset_db, autocommit=True) as c:
            c.execute("grant insert on cbir.audit_log to cbir_web")
        assert client.get(search[0], params=search[1]).json() == ok.json()
    assert len(audit_rows(two_dataset_db)) == rows + 1  # the refused request left no row; the next did
