"""The docs stay true to the CLI: docs/cli.md is the freshly generated reference, every command has help,
and every ``cbir-pg ...`` line quoted in README.md and docs/*.md names real commands and options."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest
import typer
from docs_sql import fenced_blocks, split_statements, sql_blocks

from tools import docgen

REPO = Path(__file__).resolve().parents[2]
SHELL_LANGS = frozenset({"bash", "sh", "shell", "console", "shell-session", "zsh"})
DOC_FILES = sorted(
    [p for p in [REPO / "README.md"] if p.exists()] + sorted((REPO / "docs").rglob("*.md")),
    key=lambda p: str(p.relative_to(REPO)),
)


# ------------------------------------------------------------------------- reference and help text
def test_cli_reference_is_up_to_date() -> None:
    diff = docgen.check(docgen.DEFAULT_OUTPUT)
    assert not diff, "docs/cli.md is stale; run: python -m tools.docgen\n" + diff[:6000]


def test_reference_has_a_section_per_command() -> None:
    text = docgen.DEFAULT_OUTPUT.read_text(encoding="utf-8")
    infos = list(docgen.iter_commands())
    assert len(infos) > 5  # root + the groups; a broken walk would find one
    for info in infos:
        assert re.search(rf"^#+ `{re.escape(info.name)}`$", text, re.M), f"no section for {info.name}"
    assert "python -m tools.docgen" in text.split("\n# ", 1)[0]


def test_every_command_has_help() -> None:
    missing = [i.name for i in docgen.iter_commands(include_hidden=True) if not docgen.help_text(i.command)]
    assert not missing, f"commands without help text (give them a docstring or help=): {missing}"


def test_docgen_check_reports_a_stale_file(tmp_path: Path) -> None:
    stale = tmp_path / "cli.md"
    stale.write_text(docgen.render().replace("# `cbir-pg db`\n", "# `cbir-pg dbx`\n"), encoding="utf-8")
    diff = docgen.check(stale).splitlines()
    assert "-### `cbir-pg dbx`" in diff and "+### `cbir-pg db`" in diff
    assert docgen.main(["--check", "--output", str(stale)]) == 1
    assert docgen.main(["--output", str(stale)]) == 0
    assert docgen.main(["--check", "--output", str(stale)]) == 0


# ------------------------------------------------------------------- command lines quoted in docs
@dataclass(frozen=True)
class Quoted:
    where: str  # file:line
    line: str
    argv: tuple[str, ...]  # the words after cbir-pg


_SEPARATORS = {";", "&&", "||", "|", "&", "(", ")", ";;", "|&"}
_REDIRECT = re.compile(r"^\d*(?:>>?|<<?|>&|<&)(?:&?\d+|-)?$")
_SUBST = re.compile(r"\$\(([^()`]*)\)|`([^`]*)`")


def _logical_lines(body: str, lang: str) -> list[tuple[int, str]]:
    """Command lines of a shell block (offset, text): prompts stripped, ``\\`` continuations joined,
    here-document bodies and (in console blocks with prompts) output lines left out."""
    raw = body.splitlines()
    prompted = lang in {"console", "shell-session"} and any(r.lstrip().startswith("$ ") for r in raw)
    out: list[tuple[int, str]] = []
    i = 0
    while i < len(raw):
        start, line = i, raw[i]
        i += 1
        stripped = line.strip()
        if prompted:
            if not stripped.startswith("$ "):
                continue
            stripped = stripped[2:]
        elif stripped.startswith("$ "):
            stripped = stripped[2:]
        while stripped.endswith("\\") and i < len(raw):
            stripped = stripped[:-1] + " " + raw[i].strip()
            i += 1
        heredoc = re.search(r"<<-?\s*['\"]?(\w+)['\"]?", stripped)
        if heredoc:
            marker = heredoc.group(1)
            while i < len(raw) and raw[i].strip() != marker:
                i += 1
            i += 1
        out.append((start, stripped))
    return out


def _invocations(line: str) -> list[tuple[str, ...]] | None:
    """The argument lists of every ``cbir-pg`` call in one shell line (including ones inside ``$(...)``);
    None when the line cannot be parsed (nested substitutions, unbalanced quotes)."""
    found: list[tuple[str, ...]] = []
    inner: list[str] = []

    def substitute(m: re.Match[str]) -> str:
        inner.append(m.group(1) if m.group(1) is not None else m.group(2))
        return " SUBST "

    flat = _SUBST.sub(substitute, line)
    if "$(" in flat or "`" in flat:
        return None
    for text in inner:
        sub = _invocations(text)
        if sub is None:
            return None
        found.extend(sub)
    try:
        lexer = shlex.shlex(flat, posix=True, punctuation_chars="();&|")
        lexer.whitespace_split = True
        lexer.commenters = "#"
        tokens = list(lexer)
    except ValueError:
        return None
    segments: list[list[str]] = [[]]
    for tok in tokens:
        if tok in _SEPARATORS:
            segments.append([])
        else:
            segments[-1].append(tok)
    for seg in segments:
        words: list[str] = []
        skip = False
        for tok in seg:
            if skip:
                skip = False
                continue
            if _REDIRECT.match(tok):
                skip = not tok[-1].isdigit() and tok[-1] != "-"
                continue
            if tok[:1] in "<>" and not tok.endswith(">") or tok[:2] == "2>":
                continue  # >file, <file, 2>/dev/null (a <placeholder> is kept)
            words.append(tok)
        for k, word in enumerate(words):
            if word == "cbir-pg" or word.endswith("/cbir-pg"):
                found.append(tuple(_unbracket(words[k + 1 :])))
                break
            if word == "-m" and k + 1 < len(words) and words[k + 1] == "cbir_pg" and k > 0:
                found.append(tuple(_unbracket(words[k + 2 :])))
                break
    return found


def _unbracket(words: list[str]) -> list[str]:
    """Usage-style optional parts (``[--name KEY]``) become plain words."""
    out = []
    for w in words:
        w = w.lstrip("[").rstrip("]")
        if w and w != "...":
            out.append(w)
    return out


def quoted_commands(text: str, where: str) -> tuple[list[Quoted], list[str]]:
    """The ``cbir-pg`` calls of every shell block of a Markdown text, and the lines that were skipped."""
    calls: list[Quoted] = []
    skipped: list[str] = []
    for first, body in fenced_blocks(text, SHELL_LANGS):
        lang = _fence_lang(text.splitlines()[first - 2])
        for offset, line in _logical_lines(body, lang):
            if "cbir-pg" not in line and "cbir_pg" not in line:
                continue
            argvs = _invocations(line)
            loc = f"{where}:{first + offset}"
            if argvs is None:
                skipped.append(f"{loc}: {line}")
                continue
            calls.extend(Quoted(loc, line, argv) for argv in argvs)
    return calls, skipped


def _fence_lang(fence_line: str) -> str:
    m = re.match(r"\s*(?:`{3,}|~{3,})\s*([\w-]*)", fence_line)
    return m.group(1).lower() if m else ""


@pytest.mark.parametrize("path", DOC_FILES, ids=[str(p.relative_to(REPO)) for p in DOC_FILES])
def test_quoted_command_lines_exist(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    calls, skipped = quoted_commands(text, str(path.relative_to(REPO)))
    problems = []
    for call in calls:
        resolved = docgen.resolve_command_line(call.argv)
        problems += [f"{call.where}: {err}\n    {call.line}" for err in resolved.errors]
    assert not problems, "command lines in the docs that the CLI does not accept:\n" + "\n".join(problems)
    # a file with shell blocks that mention cbir-pg must yield checked calls, not only skips
    mentions = sum(
        "cbir-pg" in body or "python -m cbir_pg " in body for _, body in fenced_blocks(text, SHELL_LANGS)
    )
    if mentions:
        assert calls, f"{path.name}: shell blocks mention cbir-pg but no call was parsed; skipped: {skipped}"


def test_some_docs_quote_commands() -> None:
    total = sum(len(quoted_commands(p.read_text(encoding="utf-8"), p.name)[0]) for p in DOC_FILES)
    assert total >= 5


# ------------------------------------------------------------ the checker itself, on a tiny app
def _tiny_app() -> typer.Typer:
    app = typer.Typer(add_completion=False)

    @app.callback()
    def root(dsn: str = typer.Option(None, "--dsn"), verbose: bool = typer.Option(False, "-v", "--verbose")):
        """Root."""

    ev = typer.Typer()
    app.add_typer(ev, name="eval", help="Evaluation.")

    @ev.command("knn")
    def knn(
        model: str = typer.Option(..., "-m", "--model"),
        k: str = typer.Option("1..99", "--k"),
        dataset: list[str] = typer.Option(None, "-d", "--dataset"),
        weighted: bool = typer.Option(False, "--weighted"),
        progress: bool = typer.Option(True, "--progress/--no-progress"),
    ):
        """kNN."""

    @app.command("psql")
    def psql(args: list[str] = typer.Argument(None)):
        """psql."""

    return app


@pytest.mark.parametrize(
    ("argv", "path", "n_errors"),
    [
        (["eval", "knn", "-m", "x", "--k", "1..5", "-d", "a", "-d", "b", "--weighted"], ["eval", "knn"], 0),
        (
            ["--dsn", "postgresql://h/db", "-v", "eval", "knn", "--model=x", "--no-progress"],
            ["eval", "knn"],
            0,
        ),
        (["eval", "knn", "-mx", "--help"], ["eval", "knn"], 0),
        (["psql", "--", "-c", "select 1", "--anything"], ["psql"], 0),
        (["eval", "knn", "--model", "x", "--bogus"], ["eval", "knn"], 1),
        (["eval", "knn", "--progres"], ["eval", "knn"], 1),
        (["--dsn", "x", "evaluate", "knn"], [], 1),
        (["eval", "linear", "-m", "x"], ["eval"], 1),
        (["eval", "--model", "x", "knn"], ["eval"], 2),  # options belong to their own command
    ],
)
def test_resolver(argv: list[str], path: list[str], n_errors: int) -> None:
    resolved = docgen.resolve_command_line(argv, _tiny_app())
    assert resolved.path == ["cbir-pg", *path]
    assert len(resolved.errors) == n_errors, resolved.errors


def test_quoted_commands_are_extracted_from_shell_blocks_only() -> None:
    text = "\n".join(
        [
            "Inline `cbir-pg nope` is not checked.",
            "```bash",
            "export CBIR_PG_DSN=postgresql://h/db  # cbir-pg in a comment",
            "cbir-pg eval knn --model x \\",
            "    --k 1..9 > out.txt 2>&1 && cbir-pg psql -- -c 'select 1'",
            'psql "$(cbir-pg --dsn x psql)" -c "select 1"',
            "cbir-pg datasets import KIND ROOT [--name KEY] [-o KEY=VALUE ...]",
            "python -m cbir_pg eval show",
            "echo $(echo $(cbir-pg nested))",
            "cat <<EOF",
            "cbir-pg inside heredoc",
            "EOF",
            "```",
            "```console",
            "$ cbir-pg eval knn -m x",
            "cbir-pg output line",
            "```",
            "```python",
            "subprocess.run(['cbir-pg', 'nope'])",
            "```",
        ]
    )
    calls, skipped = quoted_commands(text, "t.md")
    assert [c.argv for c in calls] == [
        ("eval", "knn", "--model", "x", "--k", "1..9"),
        ("psql", "--", "-c", "select 1"),
        ("--dsn", "x", "psql"),
        ("datasets", "import", "KIND", "ROOT", "--name", "KEY", "-o", "KEY=VALUE"),
        ("eval", "show"),
        ("eval", "knn", "-m", "x"),
    ]
    assert [c.where for c in calls][:2] == ["t.md:4", "t.md:4"]
    assert len(skipped) == 1 and "nested" in skipped[0]


# ------------------------------------------------------------------------ SQL block extraction
def test_sql_statements_split_outside_literals_comments_and_dollar_quotes() -> None:
    sql = (
        "create function f() returns int language plpgsql as $body$ begin return 1; end $body$;\n"
        "-- a comment; with a semicolon\n"
        "select 'a;''b' as \"x;y\" /* c; /* nested; */ still; */ from t;\n"
        "\\x\n"
        "select 2\n"
        "\\gx\n"
        "-- only a comment;\n"
        "select $$;$$, $1"
    )
    assert split_statements(sql) == [
        "create function f() returns int language plpgsql as $body$ begin return 1; end $body$",
        "-- a comment; with a semicolon\nselect 'a;''b' as \"x;y\" /* c; /* nested; */ still; */ from t",
        "select 2",
        "-- only a comment;\nselect $$;$$, $1",  # the comment's ; does not end anything
    ]


def test_sql_blocks_reads_only_sql_fences(tmp_path: Path) -> None:
    page = tmp_path / "p.md"
    page.write_text(
        "```\nsignature(p int);\n```\n\n```sql\nselect 1;\nselect 2;\n```\n\n~~~SQL\nselect 3\n~~~\n"
        "```bash\ncbir-pg db psql\n```\n",
        encoding="utf-8",
    )
    assert sql_blocks(page) == ["select 1", "select 2", "select 3"]


def test_sql_api_page_has_examples() -> None:
    page = REPO / "docs" / "sql-api.md"
    if not page.exists():
        pytest.skip("docs/sql-api.md not written yet")
    statements = sql_blocks(page)
    assert statements and all(s.strip() and not s.rstrip().endswith(";") for s in statements)
