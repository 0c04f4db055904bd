"""``cbir-pg db``: the embedded server's lifecycle, the DSN, migrations, psql and login roles."""

from __future__ import annotations

import contextlib
from typing import Annotated

import typer

from cbir_pg.app.cli._common import console, database, dsn, say_first_use, state
from cbir_pg.app.cli.output import Col, Format, emit, emit_record, format_option, print_line

app = typer.Typer(
    help="Database: start/stop the embedded server, print its URL, migrate the schema, manage logins.",
    no_args_is_help=True,
)
roles_app = typer.Typer(
    help="Login roles for people and BI tools (members of cbir_reader or cbir_worker).", no_args_is_help=True
)
app.add_typer(roles_app, name="roles")


def _server():
    from cbir_pg.config import get_settings
    from cbir_pg.db.server import EmbeddedServer

    return EmbeddedServer(get_settings().pgdata)


@app.command()
def start(
    ctx: typer.Context,
    listen: str = typer.Option(
        None,
        "--listen",
        metavar="HOST:PORT",
        help="also listen on TCP (scram-sha-256 logins only; the superuser never logs in over TCP), e.g."
        " 5433 (loopback) or 0.0.0.0:5433; a running server listening elsewhere restarts. Default: Unix"
        " socket only (a server started by any other command never listens on TCP)",
    ),
    allow_remote: bool = typer.Option(
        False,
        "--allow-remote",
        help="allow a non-loopback --listen host (other machines can then try to log in)",
    ),
) -> None:
    """Start the embedded PostgreSQL (initdb on first use); it keeps running between commands."""
    from cbir_pg.config import get_settings
    from cbir_pg.db.connect import redact, start_embedded
    from cbir_pg.db.server import DEFAULT_PORT, EmbeddedServer, is_loopback_host, parse_listen
    from cbir_pg.errors import ConfigError

    settings = get_settings(state(ctx).dsn)
    if settings.dsn:
        if listen:
            raise ConfigError("--listen applies to the embedded server; unset --dsn/CBIR_PG_DSN to use it")
        typer.echo(f"database ready: {redact(dsn(ctx))}")
        return
    say_first_use(None)
    address = parse_listen(listen) if listen else None
    if address and not is_loopback_host(address[0]):
        if not allow_remote:
            raise ConfigError(
                f"--listen {listen} opens the database to other machines (every interface for 0.0.0.0):"
                " add --allow-remote to mean it (--listen PORT listens on loopback only)"
            )
        typer.echo(
            f"warning: listening on {address[0]}:{address[1]}: anyone who can reach it may try to log in"
            " (scram-sha-256; put a firewall in front)",
            err=True,
        )
    reason = EmbeddedServer(settings.pgdata).restart_reason(address)
    if reason:
        typer.echo(
            f"restarting the running database {reason}: open connections drop for a moment and reconnect"
            f" (the socket keeps answering on port {DEFAULT_PORT})",
            err=True,
        )
    st, url = start_embedded(settings, address)
    tcp = f"; TCP {st.listen}:{st.port} (scram-sha-256)" if st.listen else ""
    note = f" ({st.note})" if st.note else ""
    typer.echo(f"database ready: {redact(url)}{tcp}{note}")


@app.command()
def stop() -> None:
    """Stop the embedded PostgreSQL server."""
    stopped = _server().stop()
    console.print("stopped" if stopped else "the embedded server was not running")


@app.command()
def status(ctx: typer.Context, fmt: Format = format_option()) -> None:
    """Show whether the embedded server runs, where its data lives, and the schema revision."""
    from cbir_pg.config import get_settings
    from cbir_pg.db.connect import check_dsn, redact
    from cbir_pg.db.database import Database
    from cbir_pg.db.migrate import current_revision, head_revision

    settings = get_settings(state(ctx).dsn)
    if settings.dsn:
        record = {
            "server": "external",
            "dsn": redact(check_dsn(settings.dsn)),
            "schema_revision": current_revision(Database(settings.dsn)),
            "head_revision": head_revision(),
        }
        emit_record(record, fmt)
        return
    st = _server().status()
    stale = st.describe_stale() if st.stale_pid is not None else None
    if stale and fmt == Format.table:
        print_line(f"embedded server: stopped ({stale}; `cbir-pg db start` removes it and starts)")
        return
    record = {
        "server": "embedded",
        "state": "running" if st.running else "stopped",
        "data_directory": str(st.pgdata),
        "pid": st.pid if st.running else None,
        "socket": str(st.socket_dir) if st.running else None,
        "port": st.port if st.running else None,
        "tcp": f"{st.listen}:{st.port}" if st.running and st.listen else None,
        "stale_pid": stale,
        "schema_revision": None,
        "head_revision": head_revision(),
    }
    if st.running:
        with contextlib.suppress(Exception):  # the cbir database may not exist yet
            record["schema_revision"] = current_revision(Database(st.uri(settings.database)))
    emit_record(record, fmt)


@app.command()
def url(
    ctx: typer.Context,
    show_password: bool = typer.Option(False, "--show-password", help="print the password too"),
) -> None:
    """Print a DSN that psql and BI tools can use (starts the embedded server if needed); the password,
    if the DSN has one, is shown as *** unless --show-password."""
    from cbir_pg.db.connect import redact

    text = dsn(ctx)
    typer.echo(text if show_password else redact(text))


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
def watchdog(
    ctx: typer.Context,
    interval: float = typer.Option(5.0, "--interval", min=0.5, help="seconds between two sweeps"),
    once: bool = typer.Option(False, "--once", help="one sweep, then exit"),
) -> None:
    """Enforce readers' statement and idle-transaction limits whatever a session set (the embedded
    server runs one by itself; run this as a service for an external server)."""
    from cbir_pg.db.watchdog import Action, sweep, watch

    def show(a: Action) -> None:
        print_line(f"{a.action}: role {a.role_name} pid {a.pid} after {a.seconds:.0f} s")

    db = database(ctx)
    if once:
        for a in sweep(db):
            show(a)
        return
    watch(db, interval, on_action=show, max_failures=10**9)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def psql(
    ctx: typer.Context,
    args: list[str] = typer.Argument(None, help="psql's own options and arguments, e.g. -c 'select 1'"),
) -> None:
    """Open psql (shipped with the embedded server) on the cbir database; a DSN password reaches psql
    through a private passfile, never its command line."""
    from cbir_pg.db.psql import run_psql

    raise typer.Exit(run_psql(database(ctx), [*(args or []), *ctx.args]))


@roles_app.command("add")
def roles_add(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="the new login role"),
    reader: bool = typer.Option(False, "--reader", help="member of cbir_reader: the cbir_report views only"),
    worker: bool = typer.Option(
        False, "--worker", help="member of cbir_worker: ingest (claim, write vectors)"
    ),
) -> None:
    """Create a login role with a generated password; prints the password once and a ready DSN."""
    from cbir_pg.db.roles import add_role, login_dsn
    from cbir_pg.db.server import EmbeddedServer
    from cbir_pg.errors import ConfigError

    if reader == worker:
        raise ConfigError("give exactly one of --reader or --worker")
    db = database(ctx)
    with db.connection(autocommit=True, vector=False) as conn:
        role = add_role(conn, name, "reader" if reader else "worker")
    settings = db.settings
    tcp = None
    if not settings.dsn:
        st = EmbeddedServer(settings.pgdata).status()
        if st.listen and st.port:
            tcp = ("127.0.0.1" if st.listen in ("*", "0.0.0.0") else st.listen, st.port)
    limits = ", ".join(f"{k} {v}" for k, v in role.limits.items())
    typer.echo(f"created login role {role.name} in {role.group}" + (f" ({limits})" if limits else ""))
    typer.echo(f"password (shown once, not stored in clear): {role.password}")
    typer.echo(f"dsn: {login_dsn(db, role.name, role.password, tcp)}")


@roles_app.command("list")
def roles_list(ctx: typer.Context, fmt: Format = format_option()) -> None:
    """Login roles that are members of cbir_reader or cbir_worker."""
    from cbir_pg.db.roles import list_roles

    with database(ctx).connection(vector=False) as conn:
        rows = list_roles(conn)
    cols = [
        Col("name", header="role"),
        Col("kind"),
        Col(
            "connection_limit",
            fmt=lambda n: "no limit" if n < 0 else f"{n} connections",
            right=True,
            header="connection limit",
        ),
    ]
    emit(rows, cols, fmt, empty="no login roles (add one: cbir-pg db roles add NAME --reader)")


@roles_app.command("drop")
def roles_drop(ctx: typer.Context, name: str = typer.Argument(..., help="the login role")) -> None:
    """Drop a login role (and its grants in the cbir database)."""
    from cbir_pg.db.roles import drop_role

    with database(ctx).connection(autocommit=True, vector=False) as conn:
        drop_role(conn, name)
    typer.echo(f"dropped role {name}")


#: the two arguments of grant-dataset and revoke-dataset
GrantRole = Annotated[str, typer.Argument(help="the login role (or cbir_reader: every reader)")]
GrantDataset = Annotated[str, typer.Argument(help="the dataset key (cbir-pg datasets list)")]


@roles_app.command("grant-dataset")
def roles_grant_dataset(ctx: typer.Context, name: GrantRole, dataset: GrantDataset) -> None:
    """Let a role see a dataset (its images, neighbours, thumbnails and pixels) in psql and in
    `cbir-pg serve`; a reader sees no dataset until one is granted (row-level security)."""
    from cbir_pg.db.roles import grant_dataset

    with database(ctx).connection(autocommit=True, vector=False) as conn:
        new = grant_dataset(conn, name, dataset)
    typer.echo(f"{name} sees dataset {dataset}" + ("" if new else " (already granted)"))


@roles_app.command("revoke-dataset")
def roles_revoke_dataset(ctx: typer.Context, name: GrantRole, dataset: GrantDataset) -> None:
    """Withdraw a grant-dataset: from the next query on, the role sees that dataset no more."""
    from cbir_pg.db.roles import revoke_dataset

    with database(ctx).connection(autocommit=True, vector=False) as conn:
        had = revoke_dataset(conn, name, dataset)
    typer.echo(f"{name} no longer sees dataset {dataset}" if had else f"{name} had no grant on {dataset}")


@roles_app.command("grants")
def roles_grants(ctx: typer.Context, fmt: Format = format_option()) -> None:
    """Which role sees which dataset (grant-dataset)."""
    from dataclasses import asdict

    from cbir_pg.app.cli.output import Col, emit
    from cbir_pg.db.roles import list_dataset_grants

    with database(ctx).connection(vector=False) as conn:
        rows = [asdict(g) for g in list_dataset_grants(conn)]
    emit(
        rows,
        [Col("dataset"), Col("role"), Col("granted_at")],
        fmt,
        empty="no dataset is granted to any role (cbir-pg db roles grant-dataset NAME DATASET)",
    )


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="db")
