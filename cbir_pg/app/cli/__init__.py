"""The ``cbir-pg`` command line: typer apps, one small module per command group.

Each command parses options, calls one library function and prints its result. Heavy libraries
(torch, timm, open_clip, matplotlib) are imported inside the library functions, so ``--help`` is instant.
"""

from __future__ import annotations

import sys

import typer

from cbir_pg.app.cli import (
    datasets,
    db,
    demo,
    embeddings,
    evaluate,
    index,
    ingest,
    labels,
    models,
    report,
    search,
    serve,
)
from cbir_pg.app.cli._common import State, err_console

app = typer.Typer(
    name="cbir-pg",
    help="PostgreSQL-native content-based medical image retrieval with vision foundation models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

# The command groups, in pipeline order; each module registers itself and imports heavy libraries lazily.
for _module in (db, datasets, labels, models, ingest, embeddings, index, search, serve, evaluate, report, demo):
    _module.register(app)


@app.callback()
def _root(
    ctx: typer.Context,
    dsn: str = typer.Option(
        None, "--dsn", envvar="CBIR_PG_DSN", help="PostgreSQL DSN; default: embedded server"
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="show tracebacks"),
) -> None:
    ctx.obj = State(dsn=dsn, verbose=verbose)


def main() -> None:
    """Console entry point: the one handler that turns project errors into one line on stderr."""
    from cbir_pg.errors import CbirError

    verbose = "--verbose" in sys.argv[1:] or "-v" in sys.argv[1:]
    from cbir_pg.logs import configure_logging

    configure_logging(verbose)
    try:
        app()
    except CbirError as exc:
        if verbose:
            raise
        err_console.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(1)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
    except Exception as exc:  # driver errors that escaped translation still become one line
        import psycopg

        if isinstance(exc, psycopg.Error) and not verbose:
            from cbir_pg.db.connect import translate

            err_console.print(f"error: {translate(exc)}", markup=False, highlight=False, soft_wrap=True)
            sys.exit(1)
        raise
