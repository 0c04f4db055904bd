"""``cbir-pg serve``: the web page and the HTTP API (docs/serve.md)."""

from __future__ import annotations

from pathlib import Path

import typer

from cbir_pg.app.cli._common import console, dsn, err_console, state


def serve(
    ctx: typer.Context,
    host: str = typer.Option("127.0.0.1", "--host", help="address to listen on (loopback by default)"),
    port: int = typer.Option(8000, "--port", help="TCP port"),
    allow_remote: bool = typer.Option(
        False, "--allow-remote", help="allow a non-loopback --host (the pages show medical images)"
    ),
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
    """Serve the search, image and results pages and the JSON API under /api/ (as role cbir_web)."""
    from cbir_pg.app.serve import build_app, check_host, run
    from cbir_pg.config import get_settings
    from cbir_pg.errors import ConfigError

    warning = check_host(host, allow_remote)
    if not 1 <= port <= 65535:
        raise ConfigError(f"--port must be between 1 and 65535, got {port}")
    if not 1 <= max_upload_mb <= 1024:
        raise ConfigError(f"--max-upload-mb must be between 1 and 1024, got {max_upload_mb}")
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
    )
    from cbir_pg.logs import configure_logging

    configure_logging(state(ctx).verbose, default="INFO")  # a server says when it loads a model
    for model in preload or ():
        store.preload(model)
    shown = f"[{host}]" if ":" in host else host
    console.print(f"cbir-pg serve: http://{shown}:{port}/  (as role cbir_web; Ctrl-C stops)", markup=False)
    try:
        run(app, host, port)
    finally:
        store.close()


def register(app: typer.Typer) -> None:
    app.command(name="serve")(serve)
