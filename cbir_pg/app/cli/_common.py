"""Shared CLI plumbing: global options, DSN resolution, progress bars, consistent output."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import typer
from rich.console import Console

console = Console()
err_console = Console(stderr=True)


@dataclass
class State:
    dsn: str | None = None
    verbose: bool = False
    db: Any = None  # the command's one cbir_pg.db.database.Database, opened on first use


def state(ctx: typer.Context) -> State:
    root = ctx.find_root()
    if root.obj is None:
        root.obj = State()
    return root.obj


def say_first_use(dsn: str | None) -> None:
    """One line on stderr the first time a command creates the embedded database in the default home
    (no ``--dsn``, no ``CBIR_PG_HOME``): where it goes and how to choose another place."""
    import os

    from cbir_pg.config import get_settings

    if dsn or os.environ.get("CBIR_PG_HOME") or os.environ.get("CBIR_PG_DSN"):
        return
    settings = get_settings(None)
    if not (settings.pgdata / "PG_VERSION").exists():
        err_console.print(
            f"cbir-pg: first use: creating and starting a database in {settings.home}"
            " (set CBIR_PG_HOME to keep it elsewhere; cbir-pg db stop stops it)",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )


def database(ctx: typer.Context):
    """The command's :class:`~cbir_pg.db.database.Database` (``--dsn``, ``CBIR_PG_DSN`` or the embedded
    server, started on demand), opened once per command and handed to the library functions."""
    from cbir_pg.db.database import Database

    st = state(ctx)
    if st.db is None:
        say_first_use(st.dsn)
        st.db = Database(st.dsn)
    return st.db


def dsn(ctx: typer.Context) -> str:
    """The resolved DSN string, for what needs the text itself (``db url``, ``psql``)."""
    return database(ctx).dsn


SPLITS = ("train", "val", "test")


def check_split(value: Any) -> Any:
    """Option callback for ``--split`` (one name, comma-separated names, or a repeated option): an unknown
    split is a usage error (exit code 2, like a misspelt option), with the close name suggested."""
    from cbir_pg.registry import did_you_mean

    if value is None:
        return value
    for item in value if isinstance(value, list | tuple) else [value]:
        for name in str(item).split(","):
            name = name.strip()
            if name and name not in SPLITS:
                raise typer.BadParameter(
                    f"{name!r} is not a split: use train, val or test{did_you_mean(name, SPLITS)}"
                )
    return value


def parse_int_list(text: str) -> list[int]:
    from cbir_pg.errors import ConfigError

    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"expected a comma-separated list of integers, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise ConfigError(f"expected positive integers, got {text!r}")
    return values


def split_names(values: list[str] | None) -> list[str]:
    """``["a,b", "c"]`` → ``["a", "b", "c"]`` for repeatable, comma-separated name options. A blank name
    (``" "``, ``"a,,b"``) is refused, never silently read as "no restriction"."""
    from cbir_pg.errors import ConfigError

    out: list[str] = []
    for v in values or []:
        parts = [x.strip() for x in v.split(",")]
        if any(not x for x in parts):
            raise ConfigError(f"empty name in {v!r}: give comma-separated names")
        out += parts
    return out


def names_or_all(values: list[str] | None) -> list[str] | None:
    """:func:`split_names` for a filter option: ``None`` (no restriction) when no name was given."""
    return split_names(values) or None
