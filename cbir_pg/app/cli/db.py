"""``cbir-pg db``: the embedded server's lifecycle, the DSN, migrations."""

from __future__ import annotations

import contextlib
import os
import subprocess

import typer

from cbir_pg.app.cli._common import console, database, dsn, state
from cbir_pg.app.cli.output import Format, emit_record, format_option

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

    console.print(f"database ready: {redact(dsn(ctx))}")


@app.command()
def stop() -> None:
    """Stop the embedded PostgreSQL server."""
    stopped = _server().stop()
    console.print("stopped" if stopped else "the embedded server was not running")


@app.command()
def status(ctx: typer.Context, fmt: Format = format_option()) -> None:
    """Show whether the embedded server runs, where its data lives, and the schema revision."""
    from cbir_pg.config import get_settings
    from cbir_pg.db.connect import redact
    from cbir_pg.db.database import Database
    from cbir_pg.db.migrate import current_revision, head_revision

    settings = get_settings(state(ctx).dsn)
    if settings.dsn:
        record = {
            "server": "external",
            "dsn": redact(settings.dsn),
            "schema_revision": current_revision(Database(settings.dsn)),
            "head_revision": head_revision(),
        }
        emit_record(record, fmt)
        return
    st = _server().status()
    record = {
        "server": "embedded",
        "running": st.running,
        "data_directory": str(st.pgdata),
        "pid": st.pid if st.running else None,
        "socket": str(st.socket_dir) if st.running else None,
        "port": st.port if st.running else None,
        "schema_revision": None,
        "head_revision": head_revision(),
    }
    if st.running:
        with contextlib.suppress(Exception):  # the cbir database may not exist yet
            record["schema_revision"] = current_revision(Database(st.uri(settings.database)))
    emit_record(record, fmt)


@app.command()
def url(ctx: typer.Context) -> None:
    """Print a DSN that psql and BI tools can use (starts the embedded server if needed)."""
    typer.echo(dsn(ctx))


@app.command()
def migrate(ctx: typer.Context) -> None:
    """Apply the alembic migrations, then re-apply the idempotent SQL functions and views in sql/."""
    from cbir_pg.db.migrate import migrate as run_migrate

    result = run_migrate(database(ctx))
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
