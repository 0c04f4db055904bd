"""Functions a screen long (issue 27): no Python function in the repository is longer than 60 lines
(from its ``def`` to its last line) unless a ``# one piece: <why>`` comment directly above it (above its
decorators) says why it must stay one piece. Read with :mod:`ast`; nothing is imported."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FOLDERS = ("cbir_pg", "eval", "ingest", "bench", "tests", "tools", "alembic")
LIMIT = 60
REASON = "# one piece:"


def long_functions(path: Path) -> list[tuple[str, int, int]]:
    """``(name, first line, length)`` of every function in ``path`` over :data:`LIMIT` lines that has no
    reason written above it."""
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    out = []
    for node in ast.walk(ast.parse(text, str(path))):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        length = node.end_lineno - node.lineno + 1
        if length <= LIMIT:
            continue
        top = min([node.lineno, *(d.lineno for d in node.decorator_list)])
        above = lines[top - 2].strip() if top >= 2 else ""
        # the reason may run over several comment lines: its first one starts with REASON
        i = top - 2
        while i >= 0 and lines[i].strip().startswith("#") and not lines[i].strip().startswith(REASON):
            i -= 1
        if not (above.startswith("#") and i >= 0 and lines[i].strip().startswith(REASON)):
            out.append((node.name, node.lineno, length))
    return out


def test_the_checker_finds_a_long_function_and_accepts_a_reason(tmp_path: Path) -> None:
    body = "".join(f"    x{i} = {i}\n" for i in range(LIMIT))
    plain = tmp_path / "plain.py"
    plain.write_text(f"def f():\n{body}")
    assert long_functions(plain) == [("f", 1, LIMIT + 1)]
    reasoned = tmp_path / "reasoned.py"
    reasoned.write_text(
        f"# one piece: a table of sixty-one steps\n# (second line of the reason)\n@staticmethod\ndef f():\n{body}"
    )
    assert long_functions(reasoned) == []
    short = tmp_path / "short.py"
    short.write_text("def f():\n    return 1\n")
    assert long_functions(short) == []


@pytest.mark.parametrize("folder", FOLDERS)
def test_no_function_is_over_60_lines_without_a_reason(folder: str) -> None:
    found = [
        f"{path.relative_to(REPO)}:{line} {name} ({length} lines)"
        for path in sorted((REPO / folder).rglob("*.py"))
        for name, line, length in long_functions(path)
    ]
    assert not found, f"split these into named steps, or write `{REASON} <why>` above the def:\n" + "\n".join(
        found
    )
