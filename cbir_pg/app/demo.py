"""The main job, end to end on real images: ``cbir-pg demo``.

1. start the embedded database (or use ``--dsn``)  2. migrate  3. import BreastMNIST + PneumoniaMNIST as
one combined, harmonised benchmark (US + XR, 4 classes)  4. ingest with a model whose real weights work
offline (``efficientnet_lite0``)  5. build the HNSW index  6. evaluate micro/macro P@1/3/5/10, ANN and
exact  7. kNN classification  8. write the PNG report  9. return the Table 2-style result.

Fusion: with a second model (``fuse_with``: a key embeds it too; ``"auto"``, the default, uses
``efficientnet_lite2`` only when its vectors already cover the benchmark, so the default demo embeds one
model; ``None`` never fuses) step 6 also evaluates that model and the reciprocal rank fusion of the two
(``cbir.similar_images_fused``, ANN), which Table 2 shows as one more row, ``rrf(<model>,<second>)``.

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
from cbir_pg.db.database import Database, scalar

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
    fuse_with: str | None = None  # the second model fused with ``model``, when there is one
    fused_model: str | None = None  # the fused row's model column
    fused_run_id: int | None = None
    fusion_note: str = ""
    #: the fused row minus each single model, P@1 micro and macro, paired over the test queries with a
    #: 95% bootstrap interval (:func:`cbir_pg.eval.compare.compare_runs`): ``{model: (micro, macro)}``
    fusion_differences: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    table2: Any = None  # pandas.DataFrame, Table 2 layout
    seconds: dict[str, float] = field(default_factory=dict)


def _latest_fresh_run(conn, model: str, kind: str) -> int | None:
    """The newest finished run of ``kind`` for ``model`` that is newer than every stored embedding."""
    row = conn.execute(
        queries.get("demo", "latest_fresh_run", table=identifiers.embedding_table(model)),
        {"model": model, "kind": kind},
    ).fetchone()
    return row["id"] if row else None


def _fusion_partner(db: Database, model: str, fuse_with: str | None, datasets: list[str]) -> str | None:
    """The second model to fuse with: ``fuse_with`` itself, or for ``"auto"`` ``efficientnet_lite2``
    when its vectors already cover every non-excluded benchmark image (the default demo embeds one)."""

    if fuse_with != "auto":
        return fuse_with
    partner = "efficientnet_lite2" if model != "efficientnet_lite2" else "efficientnet_lite0"
    with db.connection() as conn:
        if not scalar(conn, queries.get("demo", "embedding_table_exists"), {"model": partner}):
            return None
        missing = scalar(
            conn,
            queries.get("demo", "benchmark_missing_vectors", table=identifiers.embedding_table(partner)),
            {"keys": datasets},
        )
    return partner if missing == 0 else None


def _evaluate_fusion(db: Database, result: DemoResult, model: str, datasets: list[str]) -> str:
    """Reciprocal rank fusion of ``model`` and the partner, ANN, test queries, index = train; reused
    when it is newer than both models' newest vector."""
    from cbir_pg.eval.fusion import Ranking, evaluate_ranking

    partner = result.fuse_with
    if partner is None:
        result.fusion_note = (
            "no fused row: the demo embeds one model; cbir-pg demo --fuse-with efficientnet_lite2 also "
            "embeds a second one and evaluates their reciprocal rank fusion"
        )
        return "no second model to fuse"
    ranking = Ranking((model, partner), fusion="rrf")
    result.fused_model = ranking.name
    with db.connection() as conn:
        if scalar(conn, queries.get("demo", "other_datasets"), {"keys": datasets}):
            result.fusion_note = (
                "no fused row: the database holds datasets beyond the benchmark, and the fused search "
                "takes one dataset or all of them"
            )
            return "fusion skipped (other datasets present)"
        fresh = scalar(
            conn,
            queries.get(
                "demo",
                "latest_fresh_fused_run",
                table_a=identifiers.embedding_table(model),
                table_b=identifiers.embedding_table(partner),
            ),
            {"model": ranking.name},
        )
    if fresh is not None:
        result.fused_run_id = int(fresh)
        return f"{ranking.name}: reused run {fresh}"
    r = evaluate_ranking(db, ranking, datasets=datasets, mode="ann")
    result.fused_run_id = r.run_id
    return f"{ranking.name}: run {r.run_id}"


@dataclass
class _Demo:
    """The demo's state between its steps; each step is one method that returns its one-line detail."""

    db: Database
    files: dict[str, Path]
    model: str
    fuse_with: str | None
    out: Path
    batch_size: int
    device: str
    progress: bool
    result: DemoResult

    def steps(self) -> tuple[Callable[[], str], ...]:
        """The nine steps, in the order of :data:`STEPS`."""
        return (
            self.start,
            self.migrate,
            self.do_import,
            self.do_ingest,
            self.do_index,
            self.do_eval,
            self.do_knn,
            self.do_report,
            self.summarise,
        )

    def start(self) -> str:
        self.result.dsn = self.db.dsn  # resolving it starts the embedded server when no DSN is given
        from cbir_pg.db.connect import redact

        return redact(self.result.dsn)

    def migrate(self) -> str:
        from cbir_pg.db.migrate import migrate as run_migrate

        r = run_migrate(self.db)
        return f"schema at revision {r.after}"

    def do_import(self) -> str:
        from cbir_pg.datasets import import_dataset

        added = 0
        for flag, path in self.files.items():
            summary = import_dataset(self.db, "medmnist", path, flag=flag, progress=self.progress)
            added += summary.imported
        with self.db.connection() as conn:
            self.result.images = scalar(
                conn, queries.get("demo", "benchmark_images"), {"keys": list(self.files)}
            )
        self.result.imported = added
        return f"{added} new images, {self.result.images} in the benchmark"

    def _embed(self, model: str):
        """Embed the demo's datasets with ``model`` (what is already stored is kept)."""
        from cbir_pg.ingest.worker import run_ingest

        return run_ingest(
            self.db,
            model,
            datasets=list(self.files),
            batch_size=self.batch_size,
            device=self.device,
            progress=self.progress,
        )

    def do_ingest(self) -> str:
        s = self._embed(self.model)
        self.result.embedded, self.result.vectors = s.embedded, s.done
        rate = f" at {s.images_per_s:.0f} img/s" if s.embedded else ""
        detail = f"{s.embedded} new vectors{rate}, {s.done} stored" + (f" ({s.device})" if s.embedded else "")
        self.result.fuse_with = _fusion_partner(self.db, self.model, self.fuse_with, list(self.files))
        if self.fuse_with not in (None, "auto"):
            s2 = self._embed(self.fuse_with)
            detail += f"; {self.fuse_with}: {s2.embedded} new vectors, {s2.done} stored"
        return detail

    def do_index(self) -> str:
        from cbir_pg.index import build_index, index_status

        details = []
        for key in [self.model] + ([self.result.fuse_with] if self.result.fuse_with else []):
            existing = [st for st in index_status(self.db, key) if st.kind == "hnsw" and st.valid]
            if existing and (self.result.embedded == 0 or key != self.model):
                details.append(f"reused {existing[0].index_name}")
                continue
            rep = build_index(self.db, key, progress=False)
            self.result.index_built = self.result.index_built or key == self.model
            details.append(
                f"built in {rep.build_seconds:.1f} s ({rep.rows} rows, m={rep.m}, ef_construction={rep.ef_construction})"
            )
        return "; ".join(details)

    def do_eval(self) -> str:
        from cbir_pg.eval.retrieval import evaluate_retrieval

        detail = []
        for key in [self.model] + ([self.result.fuse_with] if self.result.fuse_with else []):
            with self.db.connection() as conn:
                fresh = _latest_fresh_run(conn, key, "retrieval")
            if fresh is not None:
                self.result.retrieval_reused = self.result.retrieval_reused or key == self.model
                detail.append(f"{key}: reused run {fresh} (no new embeddings since)")
                continue
            r = evaluate_retrieval(
                self.db, key, datasets=list(self.files), compare_exact=True, progress=self.progress
            )
            if key == self.model:
                self.result.retrieval_run_ids = {mode: mr.run_id for mode, mr in r.runs.items()}
            detail.append(f"{key}: runs " + ", ".join(f"{m}={mr.run_id}" for m, mr in r.runs.items()))
        detail.append(_evaluate_fusion(self.db, self.result, self.model, list(self.files)))
        return "; ".join(detail)

    def do_knn(self) -> str:
        from cbir_pg.eval.knn import evaluate_knn

        with self.db.connection() as conn:
            fresh = _latest_fresh_run(conn, self.model, "knn")
        if fresh is not None:
            self.result.knn_reused, self.result.knn_run_id = True, fresh
            return f"reused run {fresh}"
        k = evaluate_knn(self.db, self.model, datasets=list(self.files), progress=self.progress)
        self.result.knn_run_id, self.result.knn_k = k.run_id, k.k
        return f"k={k.k} chosen on val; test micro F1 {k.test.f1_micro:.3f}"

    def do_report(self) -> str:
        from cbir_pg.eval.report import write_report

        # every model of the run (the fused partner too), as `cbir-pg report` draws them
        models = [self.model] + ([self.result.fuse_with] if self.result.fuse_with else [])
        rep = write_report(self.db, self.out, models=models)
        self.result.report_index = rep.index
        kept = f" ({len(rep.reused)} unchanged, not redrawn)" if rep.reused else ""
        return f"{len(rep.figures)} figures{kept}, {rep.index}"

    def summarise(self) -> str:
        """Read the printed numbers back from the cbir_report views, as a BI tool would."""
        from cbir_pg.eval.runs import table2

        self.result.table2 = table2(self.db)
        with self.db.connection() as conn:
            row = conn.execute(queries.get("demo", "latest_ann_quality"), {"model": self.model}).fetchone()
            if row:
                self.result.recall = {
                    n: float(row[f"recall{n}"]) for n in (1, 3, 5, 10) if row[f"recall{n}"] is not None
                }
            knn = conn.execute(queries.get("demo", "latest_knn"), {"model": self.model}).fetchone()
            if knn:
                self.result.knn_run_id, self.result.knn_k = knn["run_id"], knn["k"]
                names = ("f1_micro", "f1_macro", "auprc_micro", "auprc_macro", "auroc_micro", "auroc_macro")
                self.result.knn_metrics = {n: float(knn[n]) for n in names if knn[n] is not None}
        self._fusion_differences()
        return f"{len(self.result.table2)} leaderboard rows"

    def _fusion_differences(self) -> None:
        """The fused row against each single model it fuses: a paired difference with its interval."""
        from cbir_pg.errors import ConfigError
        from cbir_pg.eval.compare import compare_runs

        if self.result.fused_run_id is None or self.result.fuse_with is None:
            return
        for key in (self.model, self.result.fuse_with):
            with self.db.connection() as conn:
                single = scalar(conn, queries.get("demo", "latest_ann_run"), {"model": key})
            if single is None:
                continue
            try:
                c = compare_runs(self.db, self.result.fused_run_id, int(single), ns=(1,))
            except ConfigError:  # the single model's latest run holds other queries: nothing to pair
                continue
            self.result.fusion_differences[key] = (c.get(1, "micro"), c.get(1, "macro"))


def _check_models(model: str, fuse_with: str | None) -> None:
    identifiers.check_key(model)
    if fuse_with not in (None, "auto"):
        identifiers.check_key(fuse_with)
        if fuse_with == model:
            from cbir_pg.errors import ConfigError

            raise ConfigError(f"--fuse-with {fuse_with} is the demo's own model: name a second one")


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
    fuse_with: str | None = "auto",
) -> DemoResult:
    """Run the nine demo steps and return what they produced (see the module docstring)."""
    from cbir_pg.app.demo_data import resolve_demo_files

    _check_models(model, fuse_with)
    settings = get_settings(dsn)
    notify = on_step or (lambda event: None)
    files = resolve_demo_files(settings, data_dir)  # fail fast, before anything is started
    result = DemoResult(dsn="", model=model, files=files)
    demo = _Demo(
        db=Database(dsn, settings=settings),
        files=files,
        model=model,
        fuse_with=fuse_with,
        out=Path(out_dir) if out_dir else Path("cbir-pg-report"),
        batch_size=batch_size,
        device=device,
        progress=progress,
        result=result,
    )
    for i, fn in enumerate(demo.steps(), start=1):
        name = STEPS[i - 1]
        notify(StepEvent(i, len(STEPS), name, "start"))
        t0 = time.perf_counter()
        detail = fn()
        secs = time.perf_counter() - t0
        result.seconds[name] = secs
        notify(StepEvent(i, len(STEPS), name, "done", detail, secs))
    return result
