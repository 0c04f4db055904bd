"""``cbir-pg eval export``: stored evaluation runs as flat files for notebooks and spreadsheets.

Three tables, one file each in the output folder (``.parquet`` or ``.csv``):

- ``runs``: one row per run (``cbir.eval_run``; JSON columns as text);
- ``neighbours``: one row per retrieval query and rank (``cbir.eval_query`` unnested): the query, its
  label, the neighbour, its label, the similarity and whether it counts as relevant;
- ``metrics``: the long-format metrics (``cbir.eval_metric``): P@N micro/macro, F1, AUPRC, AUROC,
  recall, ablation points.

Rows are streamed from a server-side cursor in chunks, so a run with millions of neighbours is written
without holding it in memory. Parquet needs ``pyarrow`` (the ``parquet`` extra).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from cbir_pg.db import identifiers, queries
from cbir_pg.errors import ConfigError

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
    import pandas as pd

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
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    params = {"runs": list(run_ids) if run_ids else None, "model": model}
    result = ExportResult()
    for table in tables:
        path = out / f"{table}.{fmt}"
        writer = _Writer(path, fmt)
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
        result.files[table], result.rows[table] = path, n
    return result
