"""`cbir-pg serve` knows its users (issue 22, section 1): database roles log in, sessions expire and end,
failed logins are bounded, the proxy header is trusted only from the proxy, the Host header and the
Origin are checked, and every route refuses a request without a login.

Real PostgreSQL roles (made as `cbir-pg db roles add` makes them), a real two-dataset MedMNIST database,
the real app through an HTTP client."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import psycopg
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from servehelp import BASE, http_client, login, login_owner, logout  # noqa: E402

from cbir_pg.app.serve.auth import AuthConfig, new_login_token  # noqa: E402

pytestmark = pytest.mark.real_data
MODEL = "tiny_cnn"


def first_image(db: str, dataset: str) -> int:
    with psycopg.connect(db) as c:
        return c.execute(
            "select min(i.id) from cbir.image i join cbir.dataset d on d.id = i.dataset_id where d.key = %s",
            (dataset,),
        ).fetchone()[0]


def routes(db: str) -> list[tuple[str, str]]:
    """Every page and API route of the app, with real ids filled in."""
    i = first_image(db, "breastmnist")
    return [
        ("GET", "/"),
        ("GET", f"/?image_id={i}&model={MODEL}"),
        ("POST", "/"),
        ("GET", f"/images/{i}"),
        ("GET", "/results"),
        ("GET", "/report/fig.png"),
        ("GET", "/api/models"),
        ("GET", f"/api/images/{i}"),
        ("GET", f"/api/images/{i}/thumbnail"),
        ("GET", f"/api/images/{i}/pixels"),
        ("GET", f"/api/images/{i}/similar?model={MODEL}"),
        ("POST", "/api/search"),
        ("GET", "/api/leaderboard"),
        ("GET", "/api/openapi.json"),
        ("GET", f"/api/images/{i}/explain?neighbour={i}&model={MODEL}"),
        ("POST", "/api/judgements"),
        ("GET", f"/api/images/{i}/judgements"),
        ("GET", f"/api/images/{i}/refined?model={MODEL}"),
    ]


def app_routes(app) -> set[str]:
    from starlette.routing import Route

    return {r.path for r in app.routes if isinstance(r, Route)}


# --------------------------------------------------------------------------- no login, no data
@pytest.mark.parametrize("mode", ["local", "password"])
def test_every_route_refuses_a_request_without_login(serve_app, two_dataset_db: str, mode: str) -> None:
    auth = AuthConfig(mode=mode, login_token=new_login_token() if mode == "local" else None)
    if mode == "password":  # as --allow-remote --host 10.1.2.3 --allowed-host cbir.example serves it
        auth.allowed_hosts = (*auth.allowed_hosts, "10.1.2.3", "cbir.example")
    app = serve_app(two_dataset_db, auth=auth)
    tested = routes(two_dataset_db)
    # the list covers every route the app has (a new route must be added to routes())
    for template in app_routes(app) - {"/login", "/logout"}:
        pattern = re.compile(re.sub(r"\{[^}]+\}", "[^/]+", template))
        assert any(pattern.fullmatch(p.split("?")[0]) for _, p in tested), f"route {template} is not tested"
    for base in (BASE, "http://cbir.example") if mode == "password" else (BASE,):
        with http_client(app, base=base) as client:
            for method, path in tested:
                r = client.request(method, path, follow_redirects=False)
                if path.startswith("/api/"):
                    assert r.status_code == 401, (method, path, r.status_code)
                    assert r.json() == {"error": "log in first", "status": 401}
                elif method == "GET":
                    assert r.status_code == 303, (method, path, r.status_code)
                    assert r.headers["location"].startswith("/login?next=")
                else:
                    assert r.status_code == 401, (method, path, r.status_code)
                assert b"breastmnist" not in r.content and b"pneumoniamnist" not in r.content


def test_a_forged_or_foreign_cookie_is_no_session(serve_app, two_dataset_db: str) -> None:
    app = serve_app(two_dataset_db)
    other = serve_app(two_dataset_db)
    with http_client(other) as c2:
        login_owner(c2, other)
        cookie = c2.cookies.get("cbir_session")
    with http_client(app) as client:
        for value in (cookie, "abc.def", cookie.split(".")[0] + ".0" * 32, ""):
            client.cookies.set("cbir_session", value)
            assert client.get("/api/models").status_code == 401


# --------------------------------------------------------------------------- logging in
def test_a_reader_logs_in_with_the_database_password(serve_app, reader_role, two_dataset_db: str) -> None:
    alice = reader_role(two_dataset_db, datasets=["breastmnist"])
    app = serve_app(two_dataset_db)
    with http_client(app) as client:
        r = login(client, (alice.name, alice.password + "x"), expect=401)
        assert "wrong user name or password" in r.text and alice.password not in r.text
        r = login(client, (alice.name + "zz", alice.password), expect=401)
        assert "wrong user name or password" in r.text
        assert client.get("/api/models").status_code == 401
        r = login(client, alice)
        assert r.headers["location"] == "/"
        set_cookie = r.headers["set-cookie"].lower()
        assert "httponly" in set_cookie and "samesite=strict" in set_cookie and "secure" not in set_cookie
        assert client.get("/api/models").status_code == 200
        page = client.get("/")
        assert page.status_code == 200 and f'<span id="who">{alice.name}</span>' in page.text
        # logout ends the session on the server: the old cookie no longer works
        cookie = client.cookies.get("cbir_session")
        assert logout(client).status_code == 303
        client.cookies.set("cbir_session", cookie)
        assert client.get("/api/models").status_code == 401


def test_a_worker_or_unknown_role_cannot_log_in(serve_app, two_dataset_db: str, pg_server_dsn: str) -> None:
    from cbir_pg.db.roles import add_role, drop_role

    with psycopg.connect(two_dataset_db, autocommit=True) as c:
        w = add_role(c, "auth_t_worker", "worker")
    try:
        app = serve_app(two_dataset_db)
        with http_client(app) as client:
            login(client, (w.name, w.password), expect=401)
            login(client, ("postgres", "postgres"), expect=401)
            # the server's own role is no person, even with its password
            web_password = (next(iter(app.state.homes)) / "serve" / "web-password").read_text().strip()
            login(client, ("cbir_web", web_password), expect=401)
    finally:
        with psycopg.connect(two_dataset_db, autocommit=True) as c:
            drop_role(c, "auth_t_worker")


def test_secure_cookie_under_tls(serve_app, reader_role, two_dataset_db: str) -> None:
    alice = reader_role(two_dataset_db)
    app = serve_app(two_dataset_db, auth=AuthConfig(secure_cookies=True))
    with http_client(app, base="https://127.0.0.1") as client:
        r = login(client, alice)
        assert "secure" in r.headers["set-cookie"].lower()


def test_roles_drop_locks_a_logged_in_reader_out(serve_app, reader_role, two_dataset_db: str) -> None:
    from cbir_pg.db.roles import drop_role

    alice = reader_role(two_dataset_db, datasets=["breastmnist"])
    app = serve_app(two_dataset_db)
    with http_client(app) as client:
        login(client, alice)
        assert client.get("/api/models").status_code == 200
        with psycopg.connect(two_dataset_db, autocommit=True) as c:
            drop_role(c, alice.name)
        assert client.get("/api/models").status_code == 401
        login(client, alice, expect=401)


def test_the_one_time_link_works_once(serve_app, two_dataset_db: str) -> None:
    app = serve_app(two_dataset_db)
    with http_client(app) as client:
        assert client.get("/login?token=wrong", follow_redirects=False).status_code == 401
        login_owner(client, app)
        assert client.get("/api/models").status_code == 200
    with http_client(app) as client:
        r = client.get(f"/login?token={app.state.login_token}", follow_redirects=False)
        assert r.status_code == 401 and client.get("/api/models").status_code == 401


def test_failed_logins_are_bounded_per_user_and_per_address(
    serve_app, reader_role, two_dataset_db: str
) -> None:
    alice = reader_role(two_dataset_db)
    bob = reader_role(two_dataset_db)
    app = serve_app(two_dataset_db, auth=AuthConfig(max_failures=3))
    with http_client(app) as client:
        for _ in range(3):
            login(client, (alice.name, "wrong-password"), expect=401)
        # the bound is reached: even the right password is refused without asking PostgreSQL
        r = login(client, alice, expect=429)
        assert "too many failed logins" in r.text
        # the same address is also blocked for another user
        login(client, bob, expect=429)
    # per user: alice stays blocked from another address
    with http_client(app, client=("10.9.8.7", 5555)) as other:
        login(other, alice, expect=429)
        login(other, bob)


def test_sessions_expire_when_idle_and_at_their_age(serve_app, reader_role, two_dataset_db: str) -> None:
    now = [1_000_000.0]
    alice = reader_role(two_dataset_db)
    app = serve_app(two_dataset_db, auth=AuthConfig(idle_s=600, max_age_s=3600, clock=lambda: now[0]))
    with http_client(app) as client:
        login(client, alice)
        now[0] += 599
        assert client.get("/api/models").status_code == 200
        now[0] += 601
        assert client.get("/api/models").status_code == 401
        login(client, alice)
        for _ in range(6):  # active every 9 minutes, but no longer than the absolute age
            now[0] += 540
            assert client.get("/api/models").status_code == 200
        now[0] += 540
        assert client.get("/api/models").status_code == 401


# --------------------------------------------------------------------------- proxy
def test_proxy_header_is_trusted_only_from_the_proxy(serve_app, reader_role, two_dataset_db: str) -> None:
    alice = reader_role(two_dataset_db, datasets=["breastmnist"])
    app = serve_app(two_dataset_db, auth=AuthConfig(mode="proxy", trusted_proxies=("10.0.0.5/32",)))
    header = {"X-Forwarded-User": alice.name}
    with http_client(app, client=("10.0.0.5", 4000)) as proxy:
        assert proxy.get("/api/models", headers=header).status_code == 200
        assert proxy.get("/api/models").status_code == 401
        assert proxy.get("/api/models", headers={"X-Forwarded-User": "nosuchrole"}).status_code == 401
        assert proxy.get("/api/models", headers={"X-Forwarded-User": "postgres"}).status_code == 401
    for address in ("10.0.0.6", "127.0.0.1"):
        with http_client(app, client=(address, 4000)) as direct:
            assert direct.get("/api/models", headers=header).status_code == 401
            login(direct, alice, expect=401)  # no password login behind a proxy


def test_proxy_mode_needs_a_proxy_address() -> None:
    from cbir_pg.errors import ConfigError

    with pytest.raises(ConfigError, match="--trusted-proxy"):
        AuthConfig(mode="proxy")


# --------------------------------------------------------------------------- host and origin
@pytest.mark.parametrize("host", ["evil.example", "evil.example:8000", "127.0.0.1.nip.io", "10.0.0.1"])
def test_a_foreign_host_header_is_refused(serve_app, two_dataset_db: str, host: str) -> None:
    app = serve_app(two_dataset_db)
    with http_client(app) as client:
        login_owner(client, app)
        assert client.get("/api/models").status_code == 200
        r = client.get("/api/models", headers={"Host": host})
        assert r.status_code == 400 and b"breastmnist" not in r.content
        assert client.get("/login", headers={"Host": host}).status_code == 400


def test_state_changing_requests_must_come_from_this_origin(
    serve_app, reader_role, two_dataset_db: str
) -> None:
    alice = reader_role(two_dataset_db, datasets=["breastmnist"])
    app = serve_app(two_dataset_db)
    with http_client(app) as client:
        # a login posted by another site's page is refused before the password is checked
        r = client.post(
            "/login",
            data={"user": alice.name, "password": alice.password},
            headers={"Origin": "http://evil.example"},
            follow_redirects=False,
        )
        assert r.status_code == 403
        login(client, alice)
        for headers in (
            {"Origin": "http://evil.example"},
            {"Origin": "null"},
            {"Sec-Fetch-Site": "cross-site"},
            {"Sec-Fetch-Site": "same-site", "Origin": BASE},
        ):
            r = client.post("/api/search", files={"file": ("a.png", b"x", "image/png")}, headers=headers)
            assert r.status_code == 403 and "cross-origin" in r.json()["error"]
            r = client.post("/logout", headers=headers, follow_redirects=False)
            assert r.status_code == 403
        assert client.get("/api/models").status_code == 200  # still logged in
        r = client.post("/api/search", files={"file": ("a.png", b"x", "image/png")}, headers={"Origin": BASE})
        assert r.status_code == 415  # same origin: the request reached the decoder
        # a browser's own form post (the pages' no-referrer policy makes its Origin null)
        r = client.post(
            "/api/search",
            files={"file": ("a.png", b"x", "image/png")},
            headers={"Origin": "null", "Sec-Fetch-Site": "same-origin"},
        )
        assert r.status_code == 415


def test_cli_refuses_remote_without_authentication_or_tls(cli_env: dict[str, str], tmp_path: Path) -> None:
    import os
    import subprocess

    def serve(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "cbir_pg", "serve", *args],
            capture_output=True,
            text=True,
            env={**cli_env, "PYTHONPATH": os.getcwd()},
            timeout=60,
        )

    for args, fragment in (
        (["--host", "0.0.0.0", "--allow-remote"], "needs authentication"),
        (["--host", "0.0.0.0", "--allow-remote", "--auth", "password"], "--certfile"),
        (["--host", "10.1.2.3", "--allow-remote", "--auth", "proxy"], "--trusted-proxy"),
        (
            ["--host", "0.0.0.0", "--allow-remote", "--auth", "proxy", "--trusted-proxy", "10.0.0.1"],
            "--allowed-host",
        ),
        (["--auth", "nobody"], "unknown --auth"),
        (["--certfile", str(tmp_path / "c.pem")], "--keyfile"),
    ):
        out = serve(*args)
        assert out.returncode == 1, (args, out.stdout, out.stderr)
        assert fragment in out.stderr and "Traceback" not in out.stderr, (args, out.stderr)
    assert not (Path(cli_env["CBIR_PG_HOME"]) / "pgdata").exists()
