"""The main job, end to end on real images: ``cbir-pg demo``.

1. start the embedded database (or use ``--dsn``)  2. migrate  3. import BreastMNIST + PneumoniaMNIST as
one combined, harmonised benchmark (US + XR, 4 classes)  4. ingest with a model whose real weights work
offline (``efficientnet_lite0``)  5. build the HNSW index  6. evaluate micro/macro P@1/3/5/10, ANN and
exact  7. kNN classification  8. write the PNG report  9. return the Table 2-style result.

Every step reuses what exists: a second run imports and embeds nothing, keeps the index, and reuses
evaluation runs that are newer than the newest embedding, so it is fast and duplicates nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cbir_pg.config import get_settings
from cbir_pg.db import identifiers, queries

STEPS = (
    "start database",
    "migrate",
    "import MedMNIST",
    "ingest",
    "build HNSW index",
    "evaluate retrieval (ANN and exact)",
    "kNN classification",
    "write report",
    "summarise",
)


@dataclass(frozen=True)
class StepEvent:
    index: int  # 1-based
    total: int
    name: str
    status: str  # "start" | "done"
    detail: str = ""
    seconds: float = 0.0


@dataclass
class DemoResult:
    dsn: str
    model: str
    files: dict[str, Path]
    imported: int = 0
    images: int = 0
    embedded: int = 0
    vectors: int = 0
    index_built: bool = False
    retrieval_run_ids: dict[str, int] = field(default_factory=dict)
    retrieval_reused: bool = False
    recall: dict[int, float] = field(default_factory=dict)
    knn_run_id: int | None = None
    knn_k: int | None = None
    knn_metrics: dict[str, float] = field(default_factory=dict)
    knn_reused: bool = False
    report_index: Path | None = None
    table2: Any = None  # pandas.DataFrame, Table 2 layout
    seconds: dict[str, float] = field(default_factory=dict)


def _latest_fresh_run(conn, model: str, kind: str) -> int | None:
    """The newest finished run of ``kind`` for ``model`` that is newer than every stored embedding."""
    row = conn.execute(
        queries.get("demo", "latest_fresh_run", table=identifiers.embedding_table(model)),
        {"model": model, "kind": kind},
    ).fetchone()
    return row["id"] if row else None


def run_demo(
    *,
    dsn: str | None = None,
    data_dir: Path | None = None,
    model: str = "efficientnet_lite0",
    out_dir: Path | None = None,
    batch_size: int = 64,
    device: str = "auto",
    progress: bool = True,
    on_step: Callable[[StepEvent], None] | None = None,
) -> DemoResult:
    """Run the nine demo steps and return what they produced (see the module docstring)."""
    from cbir_pg.app.demo_data import resolve_demo_files
    from cbir_pg.db.database import Database, scalar

    identifiers.check_key(model)
    settings = get_settings(dsn)
    out = Path(out_dir) if out_dir else Path("cbir-pg-report")
    notify = on_step or (lambda event: None)

    def step(i: int, fn: Callable[[], str]) -> None:
        name = STEPS[i - 1]
        notify(StepEvent(i, len(STEPS), name, "start"))
        t0 = time.perf_counter()
        detail = fn()
        secs = time.perf_counter() - t0
        result.seconds[name] = secs
        notify(StepEvent(i, len(STEPS), name, "done", detail, secs))

    files = resolve_demo_files(settings, data_dir)  # fail fast, before anything is started
    result = DemoResult(dsn="", model=model, files=files)
    db = Database(dsn, settings=settings)

    def start() -> str:
        result.dsn = db.dsn  # resolving it starts the embedded server when no DSN is given
        from cbir_pg.db.connect import redact

        return redact(result.dsn)

    def migrate() -> str:
        from cbir_pg.db.migrate import migrate as run_migrate

        r = run_migrate(db)
        return f"schema at revision {r.after}"

    def do_import() -> str:
        from cbir_pg.datasets import import_dataset

        added = 0
        for flag, path in files.items():
            summary = import_dataset(db, "medmnist", path, flag=flag, progress=progress)
            added += summary.imported
        with db.connection() as conn:
            result.images = scalar(conn, queries.get("demo", "benchmark_images"), {"keys": list(files)})
        result.imported = added
        return f"{added} new images, {result.images} in the benchmark"

    def do_ingest() -> str:
        from cbir_pg.ingest.worker import run_ingest

        s = run_ingest(
            db, model, datasets=list(files), batch_size=batch_size, device=device, progress=progress
        )
        result.embedded, result.vectors = s.embedded, s.done
        rate = f" at {s.images_per_s:.0f} img/s" if s.embedded else ""
        return f"{s.embedded} new vectors{rate}, {s.done} stored ({s.device})"

    def do_index() -> str:
        from cbir_pg.index import build_index, index_status

        existing = [st for st in index_status(db, model) if st.kind == "hnsw" and st.valid]
        if existing and result.embedded == 0:
            return f"reused {existing[0].index_name}"
        rep = build_index(db, model, progress=False)
        result.index_built = True
        return f"built in {rep.build_seconds:.1f} s ({rep.rows} rows, m={rep.m}, ef_construction={rep.ef_construction})"

    def do_eval() -> str:
        from cbir_pg.eval.retrieval import evaluate_retrieval

        with db.connection() as conn:
            fresh = _latest_fresh_run(conn, model, "retrieval")
        if fresh is not None:
            result.retrieval_reused = True
            return f"reused run {fresh} (no new embeddings since)"
        r = evaluate_retrieval(db, model, datasets=list(files), compare_exact=True, progress=progress)
        result.retrieval_run_ids = {mode: mr.run_id for mode, mr in r.runs.items()}
        return "runs " + ", ".join(f"{m}={i}" for m, i in result.retrieval_run_ids.items())

    def do_knn() -> str:
        from cbir_pg.eval.knn import evaluate_knn

        with db.connection() as conn:
            fresh = _latest_fresh_run(conn, model, "knn")
        if fresh is not None:
            result.knn_reused, result.knn_run_id = True, fresh
            return f"reused run {fresh}"
        k = evaluate_knn(db, model, datasets=list(files), progress=progress)
        result.knn_run_id, result.knn_k = k.run_id, k.k
        return f"k={k.k} chosen on val; test micro F1 {k.test.f1_micro:.3f}"

    def do_report() -> str:
        from cbir_pg.eval.report import write_report

        rep = write_report(db, out, models=[model])
        result.report_index = rep.index
        return f"{len(rep.figures)} figures, {rep.index}"

    def summarise() -> str:
        """Read the printed numbers back from the cbir_report views, as a BI tool would."""
        from cbir_pg.eval.runs import table2

        result.table2 = table2(db)
        with db.connection() as conn:
            row = conn.execute(queries.get("demo", "latest_ann_quality"), {"model": model}).fetchone()
            if row:
                result.recall = {
                    n: float(row[f"recall{n}"]) for n in (1, 3, 5, 10) if row[f"recall{n}"] is not None
                }
            knn = conn.execute(queries.get("demo", "latest_knn"), {"model": model}).fetchone()
            if knn:
                result.knn_run_id, result.knn_k = knn["run_id"], knn["k"]
                names = ("f1_micro", "f1_macro", "auprc_micro", "auprc_macro", "auroc_micro", "auroc_macro")
                result.knn_metrics = {n: float(knn[n]) for n in names if knn[n] is not None}
        return f"{len(result.table2)} leaderboard rows"

    for i, fn in enumerate(
        (start, migrate, do_import, do_ingest, do_index, do_eval, do_knn, do_report, summarise), start=1
    ):
        step(i, fn)
    return result
