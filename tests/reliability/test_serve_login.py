"""`cbir-pg serve` as people run it (issue 22, section 1): a real server process, real HTTP and HTTPS.

- No password, right or wrong, appears in the server's output, a response, the audit trail or
  PostgreSQL's own log.
- ``--certfile/--keyfile`` serve HTTPS, and the session cookie is then ``Secure``.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import psycopg
import pytest
from servehelp import read_login_link, start_serve, stop_serve

pytestmark = pytest.mark.real_data
REPO = Path(__file__).resolve().parents[2]


@contextmanager
def serving(db: str, log: Path, *args: str) -> Iterator[tuple[int, str]]:
    """``cbir-pg serve`` on a free loopback port: (port, the one-time link); stopped with SIGINT."""
    proc, base = start_serve(db, log, *args)
    port = int(base.rsplit(":", 1)[1])
    try:
        link = read_login_link(log)
        for _ in range(600):  # the link is printed just before the server starts listening
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if proc.poll() is not None:
                pytest.fail(f"cbir-pg serve stopped: {log.read_text()[-2000:]}")
            time.sleep(0.2)
        yield port, link
    finally:
        stop_serve(proc)


def _server_log(admin_dsn: str) -> str:
    with psycopg.connect(admin_dsn) as c:
        data = c.execute("show data_directory").fetchone()[0]
    path = Path(data) / "server.log"
    return path.read_text(errors="replace") if path.exists() else ""


def test_no_password_in_any_log_page_or_error(
    reader_role, two_dataset_db: str, pg_server_dsn: str, tmp_path: Path
) -> None:
    alice = reader_role(two_dataset_db, datasets=["breastmnist"])
    wrong = f"Wr0ng-{uuid.uuid4().hex}"
    odd = "x' or '1'='1 -- " + uuid.uuid4().hex
    log = tmp_path / "serve.log"
    seen: list[str] = []
    with serving(two_dataset_db, log) as (port, _link):
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, headers={"Origin": base}) as client:
            for name, password in (
                (alice.name, wrong),
                ("nosuchrole", wrong),
                (alice.name, odd),
                (alice.name + "'", odd),
                (alice.name, "p" * 5000),
                (alice.name, alice.password),
            ):
                r = client.post("/login", data={"user": name, "password": password})
                seen.append(r.text + str(r.headers))
            assert client.get("/api/models").status_code == 200  # the last login worked
            for path in ("/", "/results", "/api/models", "/login"):
                r = client.get(path)
                seen.append(r.text + str(r.headers))
    with psycopg.connect(two_dataset_db) as c:
        audit = repr(c.execute("select * from cbir.audit_log").fetchall())
    assert "login_failed" in audit and alice.name in audit
    places = {"server output": log.read_text(), "responses": "\n".join(seen), "audit trail": audit}
    places["PostgreSQL log"] = _server_log(pg_server_dsn)
    for where, text in places.items():
        for secret in (alice.password, wrong, odd, "p" * 5000):
            assert secret not in text, f"a password appears in the {where}"


def test_certfile_and_keyfile_serve_https_with_a_secure_cookie(two_dataset_db: str, tmp_path: Path) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("no openssl to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    log = tmp_path / "serve.log"
    with serving(two_dataset_db, log, "--certfile", str(cert), "--keyfile", str(key)) as (port, link):
        assert link.startswith(f"https://127.0.0.1:{port}/login?token=")
        with httpx.Client(verify=ssl.create_default_context(cafile=str(cert))) as client:
            assert client.get(f"https://127.0.0.1:{port}/login").status_code == 200
            r = client.get(link, follow_redirects=False)
            assert r.status_code == 303
            cookie = r.headers["set-cookie"].lower()
            assert "secure" in cookie and "httponly" in cookie and "samesite=strict" in cookie
            assert client.get(f"https://127.0.0.1:{port}/api/models").status_code == 200
        with pytest.raises(httpx.HTTPError):  # plain HTTP is not served
            httpx.get(f"http://127.0.0.1:{port}/login", timeout=10)


def test_a_forwarded_for_header_cannot_pose_as_the_proxy(
    reader_role, two_dataset_db: str, tmp_path: Path
) -> None:
    """``--auth proxy --trusted-proxy 10.0.0.5``: a local client that claims ``X-Forwarded-For: 10.0.0.5``
    is still 127.0.0.1 (the server reads the peer's address, not the header), so its user-name header is
    not trusted; the real proxy address is."""
    alice = reader_role(two_dataset_db, datasets=["breastmnist"])
    for trusted, want in (("10.0.0.5", 401), ("127.0.0.1", 200)):
        log = tmp_path / f"serve-{trusted}.log"
        proc, base = start_serve(two_dataset_db, log, "--auth", "proxy", "--trusted-proxy", trusted)
        try:
            deadline = time.monotonic() + 180
            while True:
                try:
                    r = httpx.get(
                        base + "/api/models",
                        headers={"X-Forwarded-For": "10.0.0.5", "X-Forwarded-User": alice.name},
                        timeout=5,
                    )
                    break
                except httpx.HTTPError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        pytest.fail(f"cbir-pg serve did not come up: {log.read_text()[-2000:]}")
                    time.sleep(0.3)
            assert r.status_code == want, (trusted, r.text)
        finally:
            stop_serve(proc)
