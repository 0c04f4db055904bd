"""``cbir-pg audit``: who saw what on ``cbir-pg serve`` (the owner reads ``cbir.audit_log``)."""

from __future__ import annotations

import json
from datetime import datetime

import typer

from cbir_pg.app.cli._common import database
from cbir_pg.app.cli.output import Col, Format, emit, format_option


def _when(text: str | None, option: str) -> datetime | None:
    from cbir_pg.errors import ConfigError

    if text is None:
        return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(
            f"{option} expects a date or time like 2026-12-03 or 2026-12-03T08:30, got {text!r}"
        ) from None
    return when if when.tzinfo else when.astimezone()  # a time without zone is local time


def audit(
    ctx: typer.Context,
    since: str = typer.Option(
        None, "--since", help="from this time on (ISO, e.g. 2026-12-03 or 2026-12-03T08:30)"
    ),
    until: str = typer.Option(None, "--until", help="before this time (ISO)"),
    user: str = typer.Option(None, "--user", help="only this database role (owner: the one-time link)"),
    fmt: Format = format_option(),
) -> None:
    """Every page view, search, upload, image, thumbnail and pixel fetch and login of `cbir-pg serve`:
    who, when, from where, what, which image ids and filters (append-only; the owner reads it)."""
    from cbir_pg.audit import read_audit

    rows = read_audit(database(ctx), _when(since, "--since"), _when(until, "--until"), user)
    cols = [
        Col("at", fmt=lambda v: v.isoformat(timespec="seconds")),
        Col("actor"),
        Col("auth"),
        Col("address"),
        Col("action"),
        Col("method"),
        Col("path"),
        Col("status", right=True),
        Col(
            "image_ids", fmt=lambda v: ",".join(map(str, v[:20])) + (f",… ({len(v)})" if len(v) > 20 else "")
        ),
        Col("filters", fmt=lambda v: json.dumps(v, sort_keys=True)),
    ]
    emit(rows, cols, fmt, empty="no audit rows (cbir-pg serve writes one per page view, search and fetch)")


def register(app: typer.Typer) -> None:
    app.command(name="audit")(audit)
