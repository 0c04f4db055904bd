"""Do our neighbour lists equal the authors'? (``cbir-pg eval compare-neighbours FILE --run N``)

The authors published their per-query retrieval results (Zenodo 11196400, ``experiments_<Model>.zip``).
Read from their code (``src/retrieval.py``, ``scripts/2_create_experiments.py`` of
MIC-DKFZ/foundation-models-for-cbmir), the format is: each archive holds
``chexpert_mimic_nih14_radimagenet/<Model>/knn.csv`` (beside ``config.json``, ``metadata.json``, the
FAISS index and ``retrieval.csv``), a CSV with the header ``query,1,2,...,k`` (k = 100) and one row per
query image (test, then val queries): the query's ``filepath`` as in the split CSVs, then its k nearest
train images' ``filepath``\\s in rank order (FAISS ``IndexFlatIP`` on the L2-normalised embeddings).

``FILE`` is such an archive or the ``knn.csv`` itself. Each query of run ``N`` is matched by its image
``uri`` (a ``dkfz-splits`` import stores the ``filepath`` as the uri); its top ``n`` neighbour uris are
compared with the file's first ``n`` entries. Two numbers: the share of matched queries whose top-n
lists are **identical** (same images, same order) and whose top-n **sets** are equal (order may differ
only among near-ties). The first disagreements name the query, the first rank that differs and both
images there.
"""

from __future__ import annotations

import csv
import io
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from cbir_pg.db import queries
from cbir_pg.db.database import dict_cursor
from cbir_pg.errors import ConfigError, NotFoundError

KNN_CSV = "knn.csv"


@dataclass(frozen=True)
class Disagreement:
    query: str
    rank: int  # 1-based, the first rank whose neighbour differs
    ours: str | None
    theirs: str | None
    same_set: bool


@dataclass
class NeighbourComparison:
    run_id: int
    source: str  # the file (and archive member) read
    n: int
    run_queries: int
    file_queries: int
    matched: int
    identical: int
    same_set: int
    only_in_run: int
    disagreements: list[Disagreement] = field(default_factory=list)

    @property
    def identical_share(self) -> float | None:
        return self.identical / self.matched if self.matched else None

    @property
    def same_set_share(self) -> float | None:
        return self.same_set / self.matched if self.matched else None


def _rows(text: io.TextIOBase, name: str, n: int) -> Iterator[tuple[str, list[str]]]:
    reader = csv.reader(text)
    header = next(reader, None)
    if not header or header[0].strip() != "query":
        raise ConfigError(f"{name}: not the authors' knn.csv (its header must start with 'query,1,2,...')")
    ranks = header[1:]
    if ranks[: min(n, len(ranks))] != [str(i) for i in range(1, min(n, len(ranks)) + 1)]:
        raise ConfigError(f"{name}: the columns after 'query' must be the ranks 1, 2, 3, ...")
    if len(ranks) < n:
        raise ConfigError(f"{name}: holds the top {len(ranks)} neighbours, fewer than n = {n}")
    for row in reader:
        if row:
            yield row[0], row[1 : n + 1]


def open_knn_csv(path: str | Path, member: str | None = None) -> tuple[io.TextIOBase, str]:
    """The authors' ``knn.csv`` as text: ``path`` itself, or its one ``knn.csv`` member when ``path`` is
    a zip archive (``member`` picks one when there are several)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise NotFoundError(f"{p}: no such file")
    if not zipfile.is_zipfile(p):
        return open(p, encoding="utf-8", newline=""), str(p)
    zf = zipfile.ZipFile(p)
    names = [i.filename for i in zf.infolist() if not i.is_dir()]
    if member is not None:
        if member not in names:
            raise ConfigError(f"{p}: has no member {member!r}")
        chosen = member
    else:
        found = [x for x in names if x.rsplit("/", 1)[-1] == KNN_CSV]
        if len(found) != 1:
            raise ConfigError(
                f"{p}: {'no' if not found else len(found)} {KNN_CSV} members"
                + (f" ({', '.join(found[:5])}); pick one with --member" if found else "")
            )
        chosen = found[0]
    return io.TextIOWrapper(zf.open(chosen), encoding="utf-8", newline=""), f"{p}:{chosen}"


def _run_neighbours(conn: psycopg.Connection, run_id: int, n: int) -> dict[str, list[str]]:
    """Run ``run_id``'s neighbour lists by query uri; clear errors for a missing, non-retrieval, ambiguous
    or too short run."""
    cur = dict_cursor(conn)
    info = cur.execute(queries.get("paper", "run_kind"), {"run_id": run_id}).fetchone()
    if info is None:
        raise NotFoundError(f"run {run_id} does not exist")
    if info["kind"] != "retrieval":
        raise ConfigError(f"run {run_id} is a {info['kind']} run, not a retrieval run")
    ours: dict[str, list[str]] = {}
    for r in cur.execute(queries.get("paper", "run_neighbour_uris"), {"run_id": run_id}):
        if r["query"] in ours:
            raise ConfigError(
                f"run {run_id} has two queries with the uri {r['query']!r} (datasets sharing paths):"
                " restrict the run to one dataset"
            )
        ours[r["query"]] = list(r["neighbours"])
    conn.rollback()
    if ours and max(len(v) for v in ours.values()) < n:
        raise ConfigError(f"run {run_id} stored fewer than n = {n} neighbours per query")
    return ours


def _disagreement(query: str, top: list[str], theirs: list[str], same_set: bool) -> Disagreement:
    """The first rank where the two lists differ, and what each holds there."""
    rank = next(
        (
            i
            for i in range(max(len(top), len(theirs)))
            if i >= len(top) or i >= len(theirs) or top[i] != theirs[i]
        ),
        0,
    )
    return Disagreement(
        query=query,
        rank=rank + 1,
        ours=top[rank] if rank < len(top) else None,
        theirs=theirs[rank] if rank < len(theirs) else None,
        same_set=same_set,
    )


def compare_neighbours(
    conn: psycopg.Connection,
    path: str | Path,
    run_id: int,
    *,
    n: int = 10,
    member: str | None = None,
    show: int = 10,
) -> NeighbourComparison:
    """Compare run ``run_id``'s top-``n`` lists with the authors' file (see the module docstring)."""
    if n < 1:
        raise ConfigError("n must be positive")
    ours = _run_neighbours(conn, run_id, n)
    text, source = open_knn_csv(path, member)
    out = NeighbourComparison(run_id, source, n, len(ours), 0, 0, 0, 0, 0)
    seen: set[str] = set()
    with text:
        for query, theirs in _rows(text, source, n):
            out.file_queries += 1
            mine = ours.get(query)
            if mine is None or query in seen:
                continue
            seen.add(query)
            out.matched += 1
            top = mine[:n]
            same_set = set(top) == set(theirs)
            out.same_set += same_set
            if top == theirs:
                out.identical += 1
            elif len(out.disagreements) < show:
                out.disagreements.append(_disagreement(query, top, theirs, same_set))
    out.only_in_run = len(ours) - out.matched
    return out
