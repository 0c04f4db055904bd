"""``cbir-pg serve``: a web page for similar-case browsing and a JSON API (docs/serve.md).

- :mod:`.access`: the least-privilege ``cbir_web`` login the server runs as;
- :mod:`.auth`: who is acting (the login, the one-time link, the proxy header, sessions) and may what;
- :mod:`.store`: the reads it makes (the SQL search API, image metadata, the cbir_report views);
- :mod:`.thumbs`: the content-addressed PNG cache for thumbnails and full-size views;
- :mod:`.web`: the FastAPI app (pages from ``templates/``, assets from ``static/``, API under ``/api/``).
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

from cbir_pg.errors import ConfigError

LOOPBACK_NAMES = ("localhost",)


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_host(
    host: str,
    allow_remote: bool,
    auth: str = "password",
    tls: bool = False,
    allowed_hosts: tuple[str, ...] | list[str] = (),
) -> str | None:
    """Refuse a non-loopback host without the explicit flag, without real authentication (``--auth
    password`` or ``proxy``; the one-time link is for a single user on loopback), with passwords over
    plain HTTP, or on a wildcard address without ``--allowed-host``; return the warning to print."""
    if is_loopback(host):
        return None
    if not allow_remote:
        raise ConfigError(
            f"--host {host} would let other machines reach pages of medical images: "
            "add --allow-remote to mean it (loopback 127.0.0.1 is the default)"
        )
    if auth not in ("password", "proxy"):
        raise ConfigError(
            "--allow-remote needs authentication: add --auth password (database logins, with "
            "--certfile/--keyfile) or --auth proxy (an authenticating proxy in front)"
        )
    if auth == "password" and not tls:
        raise ConfigError(
            "--allow-remote --auth password would send passwords in clear: add --certfile and --keyfile "
            "(or put a TLS proxy in front and use --auth proxy)"
        )
    if host in ("0.0.0.0", "::") and not allowed_hosts:
        raise ConfigError(
            f"--host {host} answers any name: add --allowed-host NAME for each name clients use "
            "(other Host headers are refused: DNS rebinding)"
        )
    return (
        f"warning: serving on {host}: everyone who can reach this address and log in sees medical images "
        "of the datasets granted to them"
    )


def build_app(
    owner_dsn: str,
    home: Path,
    *,
    web_dsn: str | None = None,
    max_upload_bytes: int | None = None,
    report_dir: Path | None = None,
    auth=None,
):
    """Prepare the ``cbir_web`` login (unless ``web_dsn`` is given) and return ``(app, store)``.

    ``auth`` is an :class:`~cbir_pg.app.serve.auth.AuthConfig` (default: the login form and no one-time
    link; the CLI makes the link)."""
    from cbir_pg.app.serve.access import prepare_web_role
    from cbir_pg.app.serve.auth import AuthConfig
    from cbir_pg.app.serve.store import Store
    from cbir_pg.app.serve.web import DEFAULT_MAX_UPLOAD, ServeConfig, create_app

    dsn = web_dsn or prepare_web_role(owner_dsn, home)
    store = Store(dsn)
    config = ServeConfig(
        max_upload_bytes=max_upload_bytes or DEFAULT_MAX_UPLOAD,
        report_dir=Path(report_dir) if report_dir else None,
        cache_dir=Path(home) / "cache" / "serve",
        auth=auth or AuthConfig(),
    )
    return create_app(store, config), store


def server_options(
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    uds: str | None = None,
    certfile: Path | None = None,
    keyfile: Path | None = None,
) -> dict:
    """The uvicorn settings ``serve`` runs the app with (a Unix socket ``uds`` instead of host and port:
    ``bench/product.py`` times the page served exactly so)."""
    return {
        "host": host,
        "port": port,
        "uds": uds,
        "log_level": "warning",
        "server_header": False,
        "access_log": False,  # a URL may hold the one-time login token
        # the client address is the peer's, never an X-Forwarded-For header: --trusted-proxy and the
        # per-address login bound must not be fooled by a header any local client can send
        "proxy_headers": False,
        "ssl_certfile": str(certfile) if certfile else None,
        "ssl_keyfile": str(keyfile) if keyfile else None,
    }


def run(app, host: str, port: int, certfile: Path | None = None, keyfile: Path | None = None) -> None:
    """Serve ``app`` with uvicorn until interrupted (HTTPS when ``certfile``/``keyfile`` are given)."""
    import uvicorn

    uvicorn.run(app, **server_options(host=host, port=port, certfile=certfile, keyfile=keyfile))
