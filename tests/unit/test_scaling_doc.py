"""docs/scaling.md's sizing tables match their formulas and the encoder registry's dimensions.

The formulas are restated here from the page (heap tuple and page packing; pgvector's element and
neighbour tuples from ``src/hnsw.h``), so a changed dimension in the registry, a changed default or a
hand-edited number makes this test fail with the row and column that drifted.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "scaling.md"

N = 1_600_000
M = 16
PAGE = 8192
GIB = 2**30


def al8(x: int) -> int:
    return (x + 7) // 8 * 8


def row_bytes(dim: int, b: int) -> int:
    return al8(24 + 8 + (8 + b * dim) + 8)


def heap(dim: int, b: int) -> tuple[int, int, int]:
    row = row_bytes(dim, b)
    per_page = (PAGE - 24) // (row + 4)
    return row, per_page, math.ceil(N / per_page) * PAGE


def hnsw(dim: int, b: int, m: int = M) -> tuple[int, int, int]:
    element = al8(72 + 8 + b * dim)
    neighbours = al8(4 + 2 * m * 6)
    per_page = (PAGE - 24 - 8) // (element + neighbours + 8)
    return element + neighbours, per_page, (math.ceil(N / per_page) + 1) * PAGE


def _tables(text: str) -> list[list[dict[str, str]]]:
    """Every Markdown table of the page as a list of {header: cell} rows."""
    tables, lines, i = [], text.splitlines(), 0
    while i < len(lines) - 1:
        if lines[i].startswith("|") and re.match(r"^\|[\s:|-]+\|$", lines[i + 1].strip()):
            header = [c.strip() for c in lines[i].strip().strip("|").split("|")]
            rows, j = [], i + 2
            while j < len(lines) and lines[j].startswith("|"):
                cells = [c.strip() for c in lines[j].strip().strip("|").split("|")]
                rows.append(dict(zip(header, cells, strict=False)))
                j += 1
            tables.append(rows)
            i = j
        else:
            i += 1
    return tables


def _sizing_table(kind: str) -> list[dict[str, str]]:
    total_col = f"{kind} total (GiB)"
    found = [t for t in _tables(DOC.read_text(encoding="utf-8")) if t and total_col in t[0]]
    assert len(found) == 1, f"docs/scaling.md needs exactly one table with a '{total_col}' column"
    return found[0]


def _key(row: dict[str, str]) -> str:
    return row["model"].strip("`* ")


def _num(cell: str) -> float:
    return float(cell.replace(",", "").strip("~* "))


@pytest.fixture(scope="module")
def dims() -> dict[str, int]:
    try:
        from cbir_pg.encoders import list_encoders
    except ImportError as exc:  # the registry is still being written
        pytest.skip(f"encoder registry not importable: {exc}")
    return {c.key: c.dim for c in list_encoders()}


@pytest.mark.parametrize("kind,b", [("vector", 4), ("halfvec", 2)])
def test_sizing_table_matches_formulas_and_registry(kind: str, b: int, dims: dict[str, int]) -> None:
    rows = _sizing_table(kind)
    models = [r for r in rows if _key(r) != "all 10"]
    assert len(models) == 10
    totals = {"table (GiB)": 0.0, "HNSW (GiB)": 0.0, f"{kind} total (GiB)": 0.0}
    for r in models:
        key = _key(r)
        assert key in dims, f"{key} is not a registered encoder"
        dim = dims[key]
        assert int(r["dim"]) == dim, f"{key}: doc says dim {r['dim']}, the registry {dim}"
        row, rows_pp, table = heap(dim, b)
        element, elems_pp, index = hnsw(dim, b)
        expected = {
            "row bytes": row,
            "heap rows/page": rows_pp,
            "table (GiB)": round(table / GIB, 2),
            "HNSW bytes/element": element,
            "elements/page": elems_pp,
            "HNSW (GiB)": round(index / GIB, 2),
            f"{kind} total (GiB)": round((table + index) / GIB, 2),
        }
        if kind == "vector":
            assert row == 4 * dim + 48  # the page's "4·dim + 48" for even dims
            expected["rows × row bytes (GiB)"] = round(N * row / GIB, 2)
        else:
            v_row, v_pp, v_table = heap(dim, 4)
            v_el, v_epp, v_index = hnsw(dim, 4)
            expected["saved vs vector (GiB)"] = round((v_table + v_index - table - index) / GIB, 2)
        for col, value in expected.items():
            assert _num(r[col]) == pytest.approx(value, abs=0.006), (
                f"{key}, {col}: doc {r[col]}, formula {value}"
            )
        totals["table (GiB)"] += table
        totals["HNSW (GiB)"] += index
        totals[f"{kind} total (GiB)"] += table + index
    (total_row,) = [r for r in rows if _key(r) == "all 10"]
    for col, value in totals.items():
        assert _num(total_row[col]) == pytest.approx(value / GIB, abs=0.006), f"all 10, {col}"


def test_build_memory_column_matches_index_estimate(dims: dict[str, int]) -> None:
    try:
        from cbir_pg.index import estimate_graph_mb
    except ImportError as exc:
        pytest.skip(f"cbir_pg.index not importable: {exc}")
    col = "build `maintenance_work_mem` (GiB)"
    for r in _sizing_table("vector"):
        if _key(r) == "all 10":
            continue
        want = estimate_graph_mb(N, dims[_key(r)], M) / 1024
        assert _num(r[col]) == pytest.approx(want, abs=0.006), f"{_key(r)}: doc {r[col]}, estimate {want:.2f}"


def test_measured_pages_agree_with_the_formulas() -> None:
    """The page's check table ("measured / formula" pages for 3,000 rows on PostgreSQL 18 + pgvector
    0.8.6): the formula column is what the formulas give, and the measurement is close to it."""
    n = 3000
    (table,) = [t for t in _tables(DOC.read_text(encoding="utf-8")) if t and "768-d" in t[0]]
    what = {
        "`vector` HNSW": (hnsw, 4, 1, 0.02),
        "`vector` heap": (heap, 4, 0, 0.09),
        "`halfvec` HNSW": (hnsw, 2, 1, 0.02),
    }
    seen = set()
    for r in table:
        label = r[""]
        fn, b, meta, tol = what[label]
        seen.add(label)
        for col, cell in r.items():
            if not col.endswith("-d"):
                continue
            measured, formula = (int(x) for x in cell.split("/"))
            assert formula == math.ceil(n / fn(int(col[:-2]), b)[1]) + meta, f"{label} {col}"
            assert abs(measured - formula) <= tol * formula, f"{label} {col}: measured {measured}"
    assert seen == set(what)
