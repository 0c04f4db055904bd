"""``cbir-pg serve``: the web page and the HTTP API (docs/serve.md)."""

from __future__ import annotations

from pathlib import Path

import typer

from cbir_pg.app.cli._common import dsn, err_console, state


# one piece: typer declares its options in the signature
def serve(
    ctx: typer.Context,
    host: str = typer.Option("127.0.0.1", "--host", help="address to listen on (loopback by default)"),
    port: int = typer.Option(8000, "--port", help="TCP port"),
    allow_remote: bool = typer.Option(
        False,
        "--allow-remote",
        help="allow a non-loopback --host (the pages show medical images); needs --auth password with"
        " --certfile/--keyfile, or --auth proxy",
    ),
    auth: str = typer.Option(
        "local",
        "--auth",
        help="local: database logins and a one-time login link printed at start (loopback only);"
        " password: database logins only; proxy: the user name from --proxy-header, trusted only from"
        " --trusted-proxy addresses",
    ),
    allowed_host: list[str] = typer.Option(
        None,
        "--allowed-host",
        help="a host name clients use (repeatable); other Host headers are refused (loopback names always pass)",
    ),
    certfile: Path = typer.Option(None, "--certfile", help="TLS certificate (PEM): serve HTTPS"),
    keyfile: Path = typer.Option(None, "--keyfile", help="TLS private key (PEM) of --certfile"),
    trusted_proxy: list[str] = typer.Option(
        None, "--trusted-proxy", help="with --auth proxy: an address or network of the proxy (repeatable)"
    ),
    proxy_header: str = typer.Option(
        "X-Forwarded-User", "--proxy-header", help="with --auth proxy: the header holding the user name"
    ),
    session_idle_minutes: int = typer.Option(
        30, "--session-idle-minutes", help="a session ends after this long without a request"
    ),
    session_hours: int = typer.Option(12, "--session-hours", help="a session ends this long after login"),
    max_upload_mb: int = typer.Option(20, "--max-upload-mb", help="largest accepted upload, in MiB"),
    report_dir: Path = typer.Option(
        None,
        "--report-dir",
        help="folder written by `cbir-pg report`, shown on the results page (default: ./cbir-pg-report, the demo's)",
    ),
    web_dsn: str = typer.Option(
        None,
        "--web-dsn",
        envvar="CBIR_PG_WEB_DSN",
        help="connect as this least-privilege login instead of preparing cbir_web with the owner's DSN",
    ),
    preload: list[str] = typer.Option(
        None, "--preload", help="build this model's encoder before serving; else on the first upload"
    ),
) -> None:
    """Serve the search, image and results pages and the JSON API under /api/ to logged-in database
    roles (as role cbir_web, each person's queries under their own role)."""
    from cbir_pg.app.serve import build_app, check_host, run
    from cbir_pg.config import get_settings

    tls = _check_tls(certfile, keyfile)
    warning = check_host(host, allow_remote, auth, tls, allowed_host or ())
    _check_ranges(port=port, max_upload_mb=max_upload_mb, idle=session_idle_minutes, hours=session_hours)
    config = _auth_config(
        auth,
        host,
        tls,
        idle_minutes=session_idle_minutes,
        hours=session_hours,
        trusted_proxy=trusted_proxy,
        proxy_header=proxy_header,
        allowed_host=allowed_host,
    )
    if warning:
        err_console.print(warning, markup=False, highlight=False)
    if report_dir is None and Path("cbir-pg-report").is_dir():
        report_dir = Path("cbir-pg-report")  # where `cbir-pg demo` writes its report
    app, store = build_app(
        dsn(ctx) if not web_dsn else "",
        get_settings().home,
        web_dsn=web_dsn,
        max_upload_bytes=max_upload_mb * 1024 * 1024,
        report_dir=report_dir,
        auth=config,
    )
    from cbir_pg.logs import configure_logging

    configure_logging(state(ctx).verbose, default="INFO")  # a server says when it loads a model
    for model in preload or ():
        store.preload(model)
    _say_where(_base_url(host, port, tls, allowed_host), config.login_token)
    try:
        run(app, host, port, certfile, keyfile)
    finally:
        store.close()


def _check_tls(certfile: Path | None, keyfile: Path | None) -> bool:
    """Whether to serve HTTPS: both files given and present, or neither."""
    from cbir_pg.errors import ConfigError

    if (certfile is None) != (keyfile is None):
        raise ConfigError("give both --certfile and --keyfile (or neither)")
    for path in (certfile, keyfile):
        if path is not None and not path.is_file():
            raise ConfigError(f"no such file: {path}")
    return certfile is not None


def _check_ranges(*, port: int, max_upload_mb: int, idle: int, hours: int) -> None:
    from cbir_pg.errors import ConfigError

    if not 1 <= port <= 65535:
        raise ConfigError(f"--port must be between 1 and 65535, got {port}")
    if not 1 <= max_upload_mb <= 1024:
        raise ConfigError(f"--max-upload-mb must be between 1 and 1024, got {max_upload_mb}")
    if not 1 <= idle <= 24 * 60 or not 1 <= hours <= 24 * 7:
        raise ConfigError("--session-idle-minutes must be 1-1440 and --session-hours 1-168")


def _auth_config(
    auth: str, host: str, tls: bool, *, idle_minutes, hours, trusted_proxy, proxy_header, allowed_host
):
    """Who may log in and how: a one-time owner token for ``--auth local``, session lifetimes, the
    trusted proxies and the Host names clients may use."""
    from cbir_pg.app.serve.auth import AuthConfig, allowed_hosts, new_login_token

    return AuthConfig(
        mode=auth,
        login_token=new_login_token() if auth == "local" else None,
        idle_s=idle_minutes * 60,
        max_age_s=hours * 3600,
        secure_cookies=tls,
        trusted_proxies=tuple(trusted_proxy or ()),
        proxy_header=proxy_header,
        allowed_hosts=allowed_hosts(host, allowed_host or ()),
    )


def _base_url(host: str, port: int, tls: bool, allowed_host: list[str] | None) -> str:
    """The address to print: an IPv6 host in brackets, a wildcard host as the first allowed name."""
    shown = f"[{host}]" if ":" in host else host
    if host in ("0.0.0.0", "::") and allowed_host:
        shown = allowed_host[0]
    return f"{'https' if tls else 'http'}://{shown}:{port}/"


def _say_where(base: str, login_token: str | None) -> None:
    typer.echo(f"cbir-pg serve: {base}  (as role cbir_web; Ctrl-C stops)")
    if login_token:
        # printed here only, never logged: it logs in once as the server's owner (every dataset)
        typer.echo(f"log in as the owner (once) at: {base}login?token={login_token}")


def register(app: typer.Typer) -> None:
    app.command(name="serve")(serve)
