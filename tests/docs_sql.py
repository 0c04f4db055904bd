"""Extract the SQL examples of a Markdown page (README.md, docs/sql-api.md) as a list of statements.

    from docs_sql import sql_blocks
    for statement in sql_blocks(REPO / "docs" / "sql-api.md"):
        conn.execute(statement)

Only fenced blocks tagged ``sql`` (or ``postgresql``/``pgsql``/``psql``) are read; untagged blocks (used
for signatures) are not. Statements are split on ``;`` outside string literals, quoted identifiers,
dollar-quoted bodies and comments, so ``create function ... $$ ... ; ... $$`` stays one statement.
psql meta-commands (``\\x``, ``\\d table``: a backslash outside literals, up to the end of
its line) are dropped, and ``\\g`` ends the statement before it. Each statement is returned
stripped and without its final ``;``; comment-only fragments are dropped.
"""

from __future__ import annotations

import re
from pathlib import Path

SQL_LANGS = frozenset({"sql", "postgresql", "pgsql", "psql"})

_FENCE = re.compile(r"^[ \t]{0,3}(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^`\n]*)$")
_DOLLAR = re.compile(r"\$(?:[A-Za-z_][A-Za-z0-9_]*)?\$")


def fenced_blocks(text: str, langs: frozenset[str] | set[str]) -> list[tuple[int, str]]:
    """``(first line number, body)`` of each fenced block whose info string's first word is in ``langs``
    (case-insensitive). Line numbers count from 1 and point at the first line inside the fence."""
    out: list[tuple[int, str]] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        fence = m.group("fence")
        words = m.group("info").strip().split()
        lang = words[0].lower().strip("{}.") if words else ""
        body: list[str] = []
        j = i + 1
        while j < len(lines):
            stripped = lines[j].strip()
            if stripped.startswith(fence[0] * len(fence)) and set(stripped) == {fence[0]}:
                break
            body.append(lines[j])
            j += 1
        if lang in langs:
            out.append((i + 2, "\n".join(body)))
        i = j + 1
    return out


def _comment_end(sql: str, i: int) -> int | None:
    """Where the comment starting at ``i`` ends (``--`` to the line's end; ``/* */``, which nest in
    PostgreSQL), or None if none starts there."""
    n = len(sql)
    if sql.startswith("--", i):
        end = sql.find("\n", i)
        return n if end < 0 else end
    if sql.startswith("/*", i):
        depth, j = 1, i + 2
        while j < n and depth:
            if sql.startswith("/*", j):
                depth, j = depth + 1, j + 2
            elif sql.startswith("*/", j):
                depth, j = depth - 1, j + 2
            else:
                j += 1
        return j
    return None


def _quoted_end(sql: str, i: int) -> int:
    """Just past the quote closing the string or identifier opened at ``i`` ('' and "" escape the
    quote; a backslash escapes in E'...')."""
    c, n = sql[i], len(sql)
    j = i + 1
    while j < n:
        if sql[j] == c:
            if j + 1 < n and sql[j + 1] == c:  # '' or "" escape
                j += 2
                continue
            break
        if c == "'" and sql[j] == "\\" and i > 0 and sql[i - 1] in "eE":  # E'...\'...'
            j += 2
            continue
        j += 1
    return j + 1


def _literal_end(sql: str, i: int) -> int | None:
    """Where the quoted string, quoted identifier or dollar-quoted body starting at ``i`` ends, or None
    if none starts there."""
    if sql[i] in "'\"":
        return _quoted_end(sql, i)
    if sql[i] == "$":
        m = _DOLLAR.match(sql, i)
        if m and not (i > 0 and (sql[i - 1].isalnum() or sql[i - 1] == "_")):
            tag = m.group(0)
            end = sql.find(tag, m.end())
            return len(sql) if end < 0 else end + len(tag)
    return None


def split_statements(sql: str) -> list[str]:
    """Split SQL text into statements on top-level semicolons (see the module docstring)."""
    statements: list[str] = []
    buf: list[str] = []
    i, n = 0, len(sql)
    has_code = False  # the current statement has something besides comments and whitespace

    def flush() -> None:
        nonlocal has_code
        text = "".join(buf).strip()
        if text and has_code:
            statements.append(text)
        buf.clear()
        has_code = False

    while i < n:
        c = sql[i]
        end = _comment_end(sql, i)
        if end is None:
            end = _literal_end(sql, i)
            has_code = has_code or end is not None
        if end is not None:
            buf.append(sql[i:end])
            i = end
            continue
        if c == ";":
            flush()
            i += 1
            continue
        if c == "\\":
            # a psql meta-command (\x, \d table, \timing on) is not SQL: drop the rest of the line;
            # \g and friends also end (send) the statement before them
            end = sql.find("\n", i)
            end = n if end < 0 else end
            if sql.startswith("\\g", i):
                flush()
            i = end
            continue
        if not c.isspace():
            has_code = True
        buf.append(c)
        i += 1
    flush()
    return statements


def sql_blocks(path: str | Path) -> list[str]:
    """Every SQL statement of the page's ``sql`` fenced blocks, in order."""
    text = Path(path).read_text(encoding="utf-8")
    out: list[str] = []
    for _line, body in fenced_blocks(text, SQL_LANGS):
        out.extend(split_statements(body))
    return out
