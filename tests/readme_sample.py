"""The demo's sample output in README.md, parsed so tests can hold it to a real run: the step lines, the
Table 2 rows, the kNN line and the closing lines (never the timings)."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def sample() -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    m = re.search(r"```text\n(\[1/9\].*?)```", text, flags=re.S)
    assert m, "README.md has no demo sample (a ```text block starting with [1/9])"
    return m.group(1)


def step_lines(out: str) -> list[str]:
    return re.findall(r"^\[\d/9\] .*$", out, flags=re.M)


def table_row(out: str, model: str, mode: str) -> list[str]:
    """The numbers of Table 2's row for model and mode (P@N micro and macro, without the run id)."""
    for line in out.splitlines():
        parts = line.split()
        if parts[:2] == [model, mode]:
            return parts[2:10]
    raise AssertionError(f"no {model} {mode} row in\n{out}")


def knn_line(out: str) -> str:
    return next(ln for ln in out.splitlines() if ln.startswith("kNN (k="))


def closing_lines(out: str) -> list[str]:
    """The lines after the report line that do not vary (no paths, no timings)."""
    return [ln for ln in out.splitlines() if ln.startswith("database:")]
