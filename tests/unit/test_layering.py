"""The layering can be read off the folders, and the import graph says so.

core (``cbir_pg.db``, ``datasets``, ``encoders``, ``images``, ``index``, ``search``, ...)
  <- ``cbir_pg.ingest``, ``cbir_pg.eval`` (the repository's ``ingest/`` and ``eval/`` folders)
  <- ``cbir_pg.app`` (the CLI, the demo, the web server)

Every import counts, including those inside functions (they hide arrows from a quick read), and
``TYPE_CHECKING`` blocks. The graph is built with :mod:`ast`, nothing is imported.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
#: repository folder -> the package name it is imported under
ROOTS = {"cbir_pg": "cbir_pg", "eval": "cbir_pg.eval", "ingest": "cbir_pg.ingest"}
UPPER = {
    "core": ("cbir_pg.eval", "cbir_pg.ingest", "cbir_pg.app"),
    "ingest": ("cbir_pg.eval", "cbir_pg.app"),
    "eval": ("cbir_pg.app",),
    "app": (),
}


def _modules() -> dict[str, Path]:
    mods: dict[str, Path] = {}
    for folder, package in ROOTS.items():
        for path in sorted((REPO / folder).rglob("*.py")):
            parts = list(path.relative_to(REPO / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            mods[".".join([package, *parts])] = path
    return mods


def _layer(module: str) -> str:
    if module == "cbir_pg.__main__":  # ``python -m cbir_pg`` is the CLI
        return "app"
    for name in ("app", "eval", "ingest"):
        if module == f"cbir_pg.{name}" or module.startswith(f"cbir_pg.{name}."):
            return name
    return "core"


def _resolve(name: str, mods: dict[str, Path]) -> str | None:
    """The longest known module that ``name`` (a module or ``module.attribute``) lies in."""
    while name:
        if name in mods:
            return name
        name = name.rpartition(".")[0]
    return None


def _imports(module: str, path: Path, mods: dict[str, Path]) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    is_pkg = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = module if is_pkg else module.rpartition(".")[0]
                for _ in range(node.level - 1):
                    pkg = pkg.rpartition(".")[0]
                base = f"{pkg}.{base}" if base else pkg
            names = [f"{base}.{a.name}" for a in node.names]
        for name in names:
            target = _resolve(name, mods)
            if target and target != module:
                out.add(target)
    return out


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    return {m: _imports(m, p, mods) for m, p in mods.items()}


def test_eval_and_ingest_are_found_under_cbir_pg() -> None:
    mods = _modules()
    assert {"cbir_pg.eval.topn", "cbir_pg.ingest.worker", "cbir_pg.app.cli", "cbir_pg.db.connect"} <= set(
        mods
    )
    import cbir_pg.eval.topn
    import cbir_pg.ingest.worker

    assert Path(cbir_pg.eval.topn.__file__).resolve() == mods["cbir_pg.eval.topn"].resolve()
    assert Path(cbir_pg.ingest.worker.__file__).resolve() == mods["cbir_pg.ingest.worker"].resolve()


def test_no_module_imports_the_bare_top_level_names() -> None:
    bad = []
    for folder in ("cbir_pg", "eval", "ingest", "tests", "bench", "tools"):
        for path in (REPO / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                names = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and not node.level:
                    names = [node.module or ""]
                bad += [
                    f"{path.relative_to(REPO)}: {n}" for n in names if n.split(".")[0] in ("eval", "ingest")
                ]
    assert not bad, "import cbir_pg.eval / cbir_pg.ingest, not eval / ingest:\n" + "\n".join(bad)


def test_no_arrow_points_up() -> None:
    arrows = [
        f"{src} -> {dst}"
        for src, targets in _graph().items()
        for dst in sorted(targets)
        if any(dst == up or dst.startswith(up + ".") for up in UPPER[_layer(src)])
    ]
    assert not arrows, "imports against the layering:\n" + "\n".join(sorted(arrows))


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycle() -> None:
    cycles = _cycles(_graph())
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_public_library_function_takes_a_dsn_string() -> None:
    """Library functions take a ``Database`` (or a connection); only the driver boundary and the
    settings resolve DSN text (``cbir_pg/db/connect.py``, ``database.py``, ``config.py``), and the app."""
    allowed = {"cbir_pg.db.connect", "cbir_pg.db.database", "cbir_pg.config", "cbir_pg.db.server"}
    bad = []
    for module, path in _modules().items():
        if module in allowed or _layer(module) == "app":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not node.name.startswith("_"):
                names = [a.arg for a in node.args.args + node.args.kwonlyargs + node.args.posonlyargs]
                if "dsn" in names:
                    bad.append(f"{module}.{node.name}")
    assert not bad, "public functions taking a DSN string:\n" + "\n".join(bad)
