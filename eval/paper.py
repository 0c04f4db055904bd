"""The paper's published Tables 2, 3 and 4 beside our stored runs (``cbir-pg eval compare-paper``).

The paper's numbers ship as package data, ``cbir_pg/paper/tables.csv`` (one row per table, model and
metric; transcribed from Denner et al., *Leveraging Foundation Models for Content-Based Image Retrieval
in Radiology*; three Table 2 rows were reassembled from a garbled text extraction and are marked
``reassembled``). Which stored run stands beside a paper row:

* Table 2 (retrieval on the combined set): retrieval runs of the model whose scope holds only
  ``dkfz-splits`` datasets, test queries against the train index; Table 3 (COVIDx): the same with
  ``covidx`` datasets; Table 4 (kNN and linear probe): ``knn`` / ``linear`` runs over ``dkfz-splits``.
* A run is **comparable** (labelled ``paper``) only when it was made with ``--profile paper`` *and*
  every dataset in its scope was imported with ``--profile paper``. A run made with ``--profile paper``
  over datasets imported otherwise is labelled ``paper protocol, imports not paper``.
* Per model and kind the comparable run wins, then exact search, then the newest run.
  ``profile="paper"`` keeps comparable runs only.

``difference = ours - paper``; the paper prints three decimals, so a difference within 0.0005 is
rounding.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from functools import cache
from importlib import resources

import psycopg

from cbir_pg.db import queries
from cbir_pg.db.database import dict_cursor
from cbir_pg.errors import ConfigError

TABLES = (2, 3, 4)
#: per table: the run kinds and the dataset kind their scope must hold, and what the table shows
TABLE_SCOPE: dict[int, tuple[tuple[str, ...], str, str]] = {
    2: (("retrieval",), "dkfz-splits", "retrieval on the combined dataset (test -> train)"),
    3: (("retrieval",), "covidx", "retrieval on COVIDx (test -> train)"),
    4: (("knn", "linear"), "dkfz-splits", "kNN and linear classification on the combined dataset"),
}
PAPER_LABEL = "paper"
PROTOCOL_ONLY_LABEL = "paper protocol, imports not paper"


@dataclass(frozen=True)
class PaperValue:
    """One published number: ``table``, run ``kind``, the paper's model name, our encoder key (``None``
    where we have no such model), ``metric`` (``P``, ``f1``, ``auprc``), ``average``, ``at`` (N of P@N;
    0 for Table 4), ``value`` and whether the row was ``reassembled`` from garbled text."""

    table: int
    kind: str
    model: str
    key: str | None
    metric: str
    average: str
    at: int
    value: float
    reassembled: bool

    @property
    def column(self) -> str:
        if self.metric == "P":
            return f"{self.average} P@{self.at}"
        return f"{self.kind} {self.average} {self.metric}"


@cache
def paper_values() -> tuple[PaperValue, ...]:
    """Every published number of Tables 2-4, in the paper's row and column order."""
    text = (resources.files("cbir_pg") / "paper" / "tables.csv").read_text(encoding="utf-8")
    return tuple(
        PaperValue(
            table=int(r["table"]),
            kind=r["kind"],
            model=r["model"],
            key=r["key"] or None,
            metric=r["metric"],
            average=r["average"],
            at=int(r["at"]),
            value=float(r["value"]),
            reassembled=r["reassembled"] == "yes",
        )
        for r in csv.DictReader(io.StringIO(text))
    )


@dataclass(frozen=True)
class ComparedValue:
    paper: PaperValue
    ours: float | None
    run_id: int | None

    @property
    def difference(self) -> float | None:
        return None if self.ours is None else self.ours - self.paper.value


@dataclass
class PaperRun:
    run_id: int
    kind: str
    model: str
    mode: str | None
    label: str  # paper | paper protocol, imports not paper | the run's own profile
    vectors: str
    n_queries: int | None


@dataclass
class PaperComparison:
    """The side-by-side for some tables: ``values`` in the paper's order, the run chosen per ``(table,
    kind, key)``, and the paper rows (model, kind) that have no run here (``missing``)."""

    tables: tuple[int, ...]
    values: list[ComparedValue] = field(default_factory=list)
    runs: dict[tuple[int, str, str], PaperRun] = field(default_factory=dict)
    missing: list[tuple[int, str, str]] = field(default_factory=list)


def _label(row: dict) -> str:
    if row["profile"] in ("paper", "paper-protocol"):  # retrieval labels the latter itself
        return PAPER_LABEL if row["profile"] == "paper" and row["paper_imports"] else PROTOCOL_ONLY_LABEL
    return row["profile"]


def compare_paper(
    conn: psycopg.Connection, tables: tuple[int, ...] = TABLES, profile: str | None = None
) -> PaperComparison:
    """Our latest matching run beside each published number (see the module docstring)."""
    bad = [t for t in tables if t not in TABLES]
    if bad:
        raise ConfigError(f"the paper has Tables 2, 3 and 4 with numbers to compare, not {bad[0]}")
    if profile not in (None, "paper"):
        raise ConfigError("--profile: only 'paper' (comparable runs only) or nothing (every matching run)")
    out = PaperComparison(tables=tuple(tables))
    cur = dict_cursor(conn)
    for t in tables:
        kinds, dataset_kind, _ = TABLE_SCOPE[t]
        wanted = [v for v in paper_values() if v.table == t]
        keys = sorted({v.key for v in wanted if v.key})
        rows = cur.execute(
            queries.get("paper", "candidate_runs"),
            {"kinds": list(kinds), "models": keys, "dataset_kind": dataset_kind},
        ).fetchall()
        best: dict[tuple[str, str], dict] = {}
        for r in rows:  # newest first: keep the first of the best rank
            label = _label(r)
            if profile == "paper" and label != PAPER_LABEL:
                continue
            rank = (label == PAPER_LABEL, r["mode"] != "ann")
            k = (r["kind"], r["model"])
            if k not in best or rank > best[k]["_rank"]:
                best[k] = {**r, "_rank": rank, "_label": label}
        metrics: dict[tuple[int, str, str], float] = {}
        if best:
            ids = [r["run_id"] for r in best.values()]
            for m in cur.execute(queries.get("paper", "run_metrics"), {"runs": ids}).fetchall():
                at = m["at"] if m["metric"] == "P" else 0  # kNN stores k in ``at``
                metrics.setdefault((m["run_id"], f"{m['metric']}:{m['average']}", at), float(m["value"]))
        for (kind, model), r in best.items():
            out.runs[(t, kind, model)] = PaperRun(
                r["run_id"], kind, model, r["mode"], r["_label"], r["vectors"], r["n_queries"]
            )
        seen_missing: set[tuple[int, str, str]] = set()
        for v in wanted:
            r = best.get((v.kind, v.key)) if v.key else None
            if r is None:
                if (t, v.kind, v.model) not in seen_missing:
                    seen_missing.add((t, v.kind, v.model))
                    out.missing.append((t, v.kind, v.model))
                out.values.append(ComparedValue(v, None, None))
                continue
            ours = metrics.get((r["run_id"], f"{v.metric}:{v.average}", v.at))
            out.values.append(ComparedValue(v, ours, r["run_id"]))
    return out


def report_section(conn: psycopg.Connection) -> str | None:
    """The report's "paper beside ours" section (HTML), or ``None`` when no stored run matches a paper
    table (the missing rows are then all of them, which says nothing)."""
    import html

    r = compare_paper(conn)
    shown = [v for v in r.values if v.run_id is not None]
    if not shown:
        return None

    def f(x: float | None, signed: bool = False) -> str:
        return "-" if x is None else (f"{x:+.4f}" if signed else f"{x:.4f}")

    head = "".join(
        f"<th>{c}</th>"
        for c in ("table", "model", "metric", "paper", "ours", "ours - paper", "run", "profile")
    )
    body = "".join(
        "<tr>"
        + "".join(
            f"<td>{html.escape(str(c))}</td>"
            for c in (
                v.paper.table,
                v.paper.model + (" (†)" if v.paper.reassembled else ""),
                v.paper.column,
                f"{v.paper.value:.3f}",
                f(v.ours),
                f(v.difference, True),
                v.run_id,
                r.runs[(v.paper.table, v.paper.kind, v.paper.key)].label,
            )
        )
        + "</tr>"
        for v in shown
    )
    missing: dict[int, list[str]] = {}
    for t, kind, model in r.missing:
        missing.setdefault(t, []).append(model if t != 4 else f"{model} ({kind})")
    notes = "; ".join(f"Table {t}, no run yet: {', '.join(m)}" for t, m in missing.items())
    return (
        "<h2>The paper's published numbers beside ours</h2>"
        f"<table><tr>{head}</tr>{body}</table>"
        "<p class='note'>Profile <b>paper</b>: run and imports made with --profile paper (comparable); "
        "(†) reassembled from a garbled text extraction of the paper. " + html.escape(notes) + "</p>"
    )
