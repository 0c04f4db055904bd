"""``cbir-pg db``: the embedded server's lifecycle, the DSN, migrations."""

from __future__ import annotations

import os
import subprocess

import typer

from cbir_pg.app.cli._common import console, dsn, state

app = typer.Typer(
    help="Database: start/stop the embedded server, print its URL, migrate the schema.", no_args_is_help=True
)


def _server():
    from cbir_pg.config import get_settings
    from cbir_pg.db.server import EmbeddedServer

    return EmbeddedServer(get_settings().pgdata)


@app.command()
def start(ctx: typer.Context) -> None:
    """Start the embedded PostgreSQL (initdb on first use); it keeps running between commands."""
    from cbir_pg.db.connect import redact

    url = dsn(ctx)
    console.print(f"database ready: {redact(url)}")


@app.command()
def stop() -> None:
    """Stop the embedded PostgreSQL server."""
    stopped = _server().stop()
    console.print("stopped" if stopped else "the embedded server was not running")


@app.command()
def status(ctx: typer.Context) -> None:
    """Show whether the embedded server runs, where its data lives, and the schema revision."""
    from cbir_pg.config import get_settings
    from cbir_pg.db.connect import redact
    from cbir_pg.db.migrate import current_revision, head_revision

    settings = get_settings(state(ctx).dsn)
    if settings.dsn:
        console.print(f"external server: {redact(settings.dsn)}")
        console.print(f"schema revision: {current_revision(settings.dsn) or 'none'} (head {head_revision()})")
        return
    st = _server().status()
    console.print(f"embedded server: {'running' if st.running else 'stopped'}")
    console.print(f"data directory:  {st.pgdata}")
    if st.running:
        console.print(f"pid {st.pid}, socket {st.socket_dir}, port {st.port}")
        url = st.uri(settings.database)
        try:
            console.print(f"schema revision: {current_revision(url) or 'none'} (head {head_revision()})")
        except Exception:  # the cbir database may not exist yet
            console.print("schema revision: none")


@app.command()
def url(ctx: typer.Context) -> None:
    """Print a DSN that psql and BI tools can use (starts the embedded server if needed)."""
    typer.echo(dsn(ctx))


@app.command()
def migrate(ctx: typer.Context) -> None:
    """Apply the alembic migrations, then re-apply the idempotent SQL functions and views in sql/."""
    from cbir_pg.db.migrate import migrate as run_migrate

    result = run_migrate(dsn(ctx))
    change = (
        f"{result.before or 'empty'} -> {result.after}" if result.changed else f"at {result.after}, no change"
    )
    console.print(f"schema {change}; re-applied {len(result.sql_files)} SQL files")


@app.command()
def psql(ctx: typer.Context, args: list[str] = typer.Argument(None, help="extra arguments for psql")) -> None:
    """Open psql (shipped with the embedded server) on the cbir database."""
    from cbir_pg.db.server import bin_dir

    exe = bin_dir() / "psql"
    raise typer.Exit(
        subprocess.call([str(exe) if exe.exists() else "psql", dsn(ctx), *(args or [])], env=os.environ)
    )


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="db")
