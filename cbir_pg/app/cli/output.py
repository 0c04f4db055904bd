"""How every listing and status command prints: ``--format table|json|csv``, one code path.

- ``table`` (default) is for people. It fits the terminal: when the table is wider than the terminal, each
  row is printed as a block of ``column  value`` lines instead (like ``psql``'s expanded display), so no
  value is ever cut or squeezed to nothing; values longer than a line fold onto the next one. When the
  output is piped (not a terminal, no ``COLUMNS``), tables print at their full width.
- ``json`` is for scripts: JSON lines, one object per row (``jq -s`` makes an array), keys as in the
  table header; a status prints one object. Numbers stay numbers, missing values are ``null``.
- ``csv`` is for spreadsheets: a header line, then one line per row.

Library functions return rows; the commands describe their columns once (:class:`Col`) and call
:func:`emit`.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

import typer


class Format(str, Enum):
    table = "table"
    json = "json"
    csv = "csv"


def format_option(default: Format = Format.table) -> Any:
    """The ``--format`` option, the same on every command."""
    return typer.Option(
        default,
        "--format",
        help="table (for people), json (JSON lines: one object per row) or csv",
        case_sensitive=False,
    )


def output_width() -> int | None:
    """The columns the output may use: ``COLUMNS`` when set, the terminal's width when stdout is a
    terminal, else ``None`` (piped: no limit)."""
    cols = os.environ.get("COLUMNS", "")
    if cols.isdigit() and int(cols) > 0:
        return int(cols)
    try:
        if sys.stdout.isatty():
            return shutil.get_terminal_size().columns
    except (AttributeError, ValueError, OSError):
        pass
    return None


@dataclass(frozen=True)
class Col:
    """One output column: its key (JSON/CSV and header), how a row's value is read, and how the
    table shows it (``fmt``; the raw value goes to JSON and CSV)."""

    key: str
    get: Callable[[Any], Any] | None = None
    fmt: Callable[[Any], str] | None = None
    right: bool = False
    header: str | None = None  # the table's header when it differs from the key

    def value(self, row: Any) -> Any:
        if self.get is not None:
            return self.get(row)
        if isinstance(row, Mapping):
            return row.get(self.key)
        return getattr(row, self.key)

    def text(self, value: Any) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "-"
        if self.fmt is not None:
            return self.fmt(value)
        if isinstance(value, bool):
            return "yes" if value else "no"
        if isinstance(value, (list, tuple)):
            return ",".join(str(v) for v in value)
        return str(value)


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item"):  # numpy scalars
        return _jsonable(value.item())
    return str(value)


def _csv_cell(value: Any) -> Any:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, (list, tuple, set)):
        return ",".join(str(v) for v in value)
    if isinstance(value, Mapping):
        return json.dumps(_jsonable(value))
    return value


def _echo(line: str = "") -> None:
    typer.echo(line)


def print_line(text: str) -> None:
    """A line of prose: wrapped between words to the terminal (continuations indented), never inside a
    value such as a path or a key; whole when piped."""
    import textwrap

    width = output_width()
    if width is None or len(text) <= width:
        typer.echo(text)
        return
    for line in textwrap.wrap(
        text, width=width, subsequent_indent="  ", break_long_words=False, break_on_hyphens=False
    ):
        typer.echo(line)


def say(text: str, fmt: Format = Format.table) -> None:
    """Prose around a result: on stdout for a table, on stderr for JSON and CSV (stdout stays data)."""
    if fmt == Format.table:
        print_line(text)
    else:
        typer.echo(text, err=True)


def emit(
    rows: Iterable[Any],
    columns: Sequence[Col],
    fmt: Format = Format.table,
    *,
    title: str | None = None,
    notes: Sequence[str] = (),
    empty: str | None = None,
) -> None:
    """Print ``rows`` in the chosen format. ``notes`` (table only) follow the table; ``empty`` is said
    (table only, on stdout) when there is no row; JSON and CSV then print nothing (CSV: the header)."""
    rows = list(rows)
    if fmt == Format.json:
        for r in rows:
            _echo(json.dumps({c.key: _jsonable(c.value(r)) for c in columns}, ensure_ascii=False))
        return
    if fmt == Format.csv:
        w = csv.writer(sys.stdout, lineterminator="\n")
        w.writerow([c.key for c in columns])
        for r in rows:
            w.writerow([_csv_cell(c.value(r)) for c in columns])
        sys.stdout.flush()
        return
    if not rows:
        if empty:
            print_line(empty)
        return
    cells = [[c.text(c.value(r)) for c in columns] for r in rows]
    print_table([c.header or c.key for c in columns], cells, right=[c.right for c in columns], title=title)
    for n in notes:
        print_line(n)


def emit_record(record: Mapping[str, Any], fmt: Format = Format.table) -> None:
    """A status: one object in JSON, a two-line CSV, or ``key: value`` lines."""
    if fmt == Format.json:
        _echo(json.dumps(_jsonable(dict(record)), ensure_ascii=False))
        return
    if fmt == Format.csv:
        w = csv.writer(sys.stdout, lineterminator="\n")
        w.writerow(list(record))
        w.writerow([_csv_cell(v) for v in record.values()])
        sys.stdout.flush()
        return
    width = max((len(k) for k in record), default=0)
    for k, v in record.items():
        print_line(f"{k + ':':<{width + 1}} {Col(k).text(v)}")


def _table(headers: Sequence[str], cells: Sequence[Sequence[str]], right: Sequence[bool], title: str | None):
    from rich import box
    from rich.table import Table

    t = Table(title=title, box=box.SIMPLE_HEAD, header_style="bold", pad_edge=False)
    for h, r in zip(headers, right, strict=True):
        t.add_column(h, justify="right" if r else "left", no_wrap=True)
    for row in cells:
        t.add_row(*row)
    return t


def _fold(text: str, width: int) -> list[str]:
    width = max(width, 8)
    out: list[str] = []
    for part in text.split("\n") or [""]:
        while len(part) > width:
            out.append(part[:width])
            part = part[width:]
        out.append(part)
    return out


def print_table(
    headers: Sequence[str],
    cells: Sequence[Sequence[str]],
    *,
    right: Sequence[bool] | None = None,
    title: str | None = None,
) -> None:
    """A table at its natural width when it fits (or when piped); else one block per row."""
    from rich.console import Console

    right = list(right) if right is not None else [False] * len(headers)
    width = output_width()
    table = _table(headers, cells, right, title)
    wide = Console(width=100_000, force_terminal=False, no_color=True, highlight=False)
    natural = wide.measure(table).maximum
    if width is None or natural <= width:
        console = Console(width=natural if width is None else width, highlight=False, soft_wrap=False)
        with console.capture() as cap:
            console.print(table)
        for line in cap.get().rstrip("\n").split("\n"):
            _echo(line.rstrip())
        return
    # expanded display: "-[ 1 ]-" then one "column  value" line per column, values folded to the width
    if title:
        for line in _fold(title, width):
            _echo(line)
    headers = [h.replace("\n", " ") for h in headers]
    label = max(len(h) for h in headers)
    for i, row in enumerate(cells, 1):
        _echo(f"-[ {i} ]" + "-" * max(0, min(width, 40) - len(f"-[ {i} ]")))
        for h, v in zip(headers, row, strict=True):
            chunks = _fold(v, width - label - 2)
            _echo(f"{h:<{label}}  {chunks[0]}".rstrip())
            for c in chunks[1:]:
                _echo(" " * (label + 2) + c)
