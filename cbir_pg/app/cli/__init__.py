"""The ``cbir-pg`` command line: typer apps, one small module per command group.

Each command parses options, calls one library function and prints its result. Heavy libraries
(torch, timm, open_clip, matplotlib) are imported inside the library functions, so ``--help`` is instant.
"""

from __future__ import annotations

import sys

import typer

from cbir_pg.app.cli import (
    audit,
    datasets,
    db,
    demo,
    dicom,
    embeddings,
    evaluate,
    explain,
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
    add_completion=True,
    rich_markup_mode=None,  # plain click help: option names are never cut at 80 columns
)

# The command groups, in pipeline order; each module registers itself and imports heavy libraries lazily.
for _module in (
    db,
    datasets,
    dicom,
    labels,
    models,
    ingest,
    embeddings,
    index,
    search,
    explain,
    serve,
    audit,
    evaluate,
    report,
    demo,
):
    _module.register(app)


def _print_version(value: bool) -> None:
    if value:
        from cbir_pg import __version__

        typer.echo(f"cbir-pg {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    dsn: str = typer.Option(
        None, "--dsn", envvar="CBIR_PG_DSN", help="PostgreSQL DSN; default: embedded server"
    ),
    verbose: bool = typer.Option(False, "--verbose/--no-verbose", "-v", help="show tracebacks"),
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="print the version and exit"
    ),
) -> None:
    ctx.obj = State(dsn=dsn, verbose=verbose)


def main() -> None:
    """Console entry point: the one handler that turns project errors into one line on stderr."""
    from cbir_pg.errors import CbirError

    try:  # typer >= 0.20 vendors click
        from typer._click.exceptions import NoArgsIsHelpError, UsageError
    except ImportError:  # pragma: no cover - older typer on plain click
        from click.exceptions import NoArgsIsHelpError, UsageError

    verbose = "--verbose" in sys.argv[1:] or "-v" in sys.argv[1:]
    from cbir_pg.logs import configure_logging

    configure_logging(verbose)
    try:
        code = app(standalone_mode=False)
    except NoArgsIsHelpError as exc:
        exc.show()
        sys.exit(2)
    except UsageError as exc:
        # one line, like every other error; exit code 2 tells a usage mistake from a failed command (1)
        hint = f" (see {exc.ctx.command_path} --help)" if exc.ctx is not None else ""
        err_console.print(
            f"error: {exc.format_message()}{hint}", markup=False, highlight=False, soft_wrap=True
        )
        sys.exit(2)
    except typer.Abort:
        err_console.print("aborted")
        sys.exit(1)
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
    if isinstance(code, int) and code:
        sys.exit(code)
