"""``cbir-pg serve``: a web page for similar-case browsing and a JSON API (docs/serve.md).

- :mod:`.access`: the least-privilege ``cbir_web`` login the server runs as;
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


def check_host(host: str, allow_remote: bool) -> str | None:
    """Refuse a non-loopback host without the explicit flag; with it, return the warning to print."""
    if is_loopback(host):
        return None
    if not allow_remote:
        raise ConfigError(
            f"--host {host} would let other machines reach pages of medical images: "
            "add --allow-remote to mean it (loopback 127.0.0.1 is the default)"
        )
    return (
        f"warning: serving on {host}: anyone who can reach this address sees medical images and "
        "search results; put it behind authentication and TLS"
    )


def build_app(
    owner_dsn: str,
    home: Path,
    *,
    web_dsn: str | None = None,
    max_upload_bytes: int | None = None,
    report_dir: Path | None = None,
):
    """Prepare the ``cbir_web`` login (unless ``web_dsn`` is given) and return ``(app, store)``."""
    from cbir_pg.app.serve.access import prepare_web_role
    from cbir_pg.app.serve.store import Store
    from cbir_pg.app.serve.web import DEFAULT_MAX_UPLOAD, ServeConfig, create_app

    dsn = web_dsn or prepare_web_role(owner_dsn, home)
    store = Store(dsn)
    config = ServeConfig(
        max_upload_bytes=max_upload_bytes or DEFAULT_MAX_UPLOAD,
        report_dir=Path(report_dir) if report_dir else None,
        cache_dir=Path(home) / "cache" / "serve",
    )
    return create_app(store, config), store


def run(app, host: str, port: int) -> None:
    """Serve ``app`` with uvicorn until interrupted."""
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level="warning", server_header=False, access_log=False)
