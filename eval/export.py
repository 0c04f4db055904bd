"""``cbir-pg eval export``: stored evaluation runs as flat files for notebooks and spreadsheets.

Three tables, one file each in the output folder (``.parquet`` or ``.csv``):

- ``runs``: one row per run (``cbir.eval_run``; JSON columns as text);
- ``neighbours``: one row per retrieval query and rank (``cbir.eval_query`` unnested): the query, its
  label, the neighbour, its label, the similarity and whether it counts as relevant;
- ``metrics``: the long-format metrics (``cbir.eval_metric``): P@N micro/macro, F1, AUPRC, AUROC,
  recall, ablation points.

Rows are streamed from a server-side cursor in chunks, so a run with millions of neighbours is written
without holding it in memory. Parquet needs ``pyarrow`` (the ``parquet`` extra).

The output folder must be a real folder: an empty name, a symlink (``/proc/self``, a link into
``/etc``) or something that is not a folder (``/dev/null``) is a one-line error. Each file is written
to a new temporary file in the folder and renamed over its name, so a symlink planted at
``runs.csv`` is replaced, never followed. Runs that do not exist are an error before anything is
written.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from cbir_pg.db import identifiers, queries
from cbir_pg.errors import ConfigError, NotFoundError

TABLES = ("runs", "neighbours", "metrics")
FORMATS = ("parquet", "csv")
CHUNK = 50_000


@dataclass
class ExportResult:
    files: dict[str, Path] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)


class _Writer:
    """Appends DataFrame chunks to one Parquet or CSV file."""

    def __init__(self, path: Path, fmt: str) -> None:
        self.path, self.fmt = path, fmt
        self._pq = None
        self._first = True

    def write(self, df) -> None:
        if self.fmt == "csv":
            df.to_csv(self.path, mode="w" if self._first else "a", header=self._first, index=False)
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            table = pa.Table.from_pandas(df, preserve_index=False)
            if self._pq is None:
                self._pq = pq.ParquetWriter(self.path, table.schema)
            self._pq.write_table(table.cast(self._pq.schema))
        self._first = False

    def close(self) -> None:
        if self._pq is not None:
            self._pq.close()


def export_runs(
    conn: psycopg.Connection,
    out_dir: str | Path,
    *,
    fmt: str = "parquet",
    run_ids: Sequence[int] | None = None,
    model: str | None = None,
    tables: Sequence[str] = TABLES,
) -> ExportResult:
    """Write ``tables`` of the selected runs (all by default) to ``out_dir/<table>.<fmt>``."""

    if fmt not in FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}: use {' or '.join(FORMATS)}")
    if model is not None:
        identifiers.check_key(model)  # a model key, never SQL: refused before anything is written
    unknown = [t for t in tables if t not in TABLES]
    if unknown:
        raise ConfigError(f"unknown table(s) {', '.join(unknown)}: choose from {', '.join(TABLES)}")
    if fmt == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise ConfigError(
                "Parquet needs pyarrow: pip install 'cbir-pg[parquet]', or use --format csv"
            ) from None
    out = output_folder(out_dir)
    params = {"runs": list(run_ids) if run_ids else None, "model": model}
    found = [r["id"] for r in conn.execute(queries.get("export", "run_ids"), params).fetchall()]
    conn.rollback()
    if run_ids and (missing := sorted(set(run_ids) - set(found))):
        raise NotFoundError(
            f"no evaluation run {', '.join(map(str, missing))} (cbir-pg eval runs lists them)"
        )
    if not found and model is not None:
        raise NotFoundError(
            "no evaluation run matches" + (f" model {model!r}" if model else "") + "; nothing written"
        )
    result = ExportResult()
    for table in tables:
        path = out / f"{table}.{fmt}"
        try:
            _export_table(conn, table, path, fmt, params, result)
        except OSError as exc:
            raise ConfigError(f"cannot write {path}: {exc.strerror or exc}") from None
    return result


def output_folder(out_dir: str | Path) -> Path:
    """The export folder, created if needed; refused when empty, a symlink or not a folder."""
    import os

    text = os.fspath(out_dir)
    if not str(text).strip():
        raise ConfigError("--out: give a folder name (an empty name would write into the current folder)")
    out = Path(text)
    if out.is_symlink():
        raise ConfigError(f"--out {out}: is a symlink; give the folder itself")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"--out {out}: cannot create the folder ({exc.strerror or exc})") from None
    if out.is_symlink() or not out.is_dir():  # swapped meanwhile
        raise ConfigError(f"--out {out}: is not a plain folder")
    return out


def _export_table(conn: psycopg.Connection, table: str, path: Path, fmt: str, params: dict, result) -> None:
    """Write one table to a new temporary file beside ``path``, then rename it over ``path`` (a symlink
    at ``path`` is replaced, never followed)."""
    import os
    import tempfile

    import pandas as pd

    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        writer = _Writer(tmp, fmt)
        n = 0
        with conn.transaction(), conn.cursor(name=f"export_{table}") as cur:
            cur.itersize = CHUNK
            cur.execute(queries.get("export", table), params)
            columns: list[str] | None = None
            while rows := cur.fetchmany(CHUNK):
                columns = columns or [d.name for d in cur.description]
                writer.write(pd.DataFrame(rows, columns=columns))
                n += len(rows)
            if n == 0:
                columns = [d.name for d in cur.description] if cur.description else []
                writer.write(pd.DataFrame(columns=columns))
        writer.close()
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    result.files[table], result.rows[table] = path, n
