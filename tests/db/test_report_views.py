"""The report views BI tools read keep their columns (names, order and types) exactly, and their metric
pivots (``cbir_report.metric_at_n``, ``cbir_report.classification_runs``) put each stored metric in its
column: hand-made runs in ``cbir.eval_run`` and ``cbir.eval_metric``, read back through the views."""

from __future__ import annotations

import psycopg
from datasets_fixtures import store_eval_run, store_metrics
from psycopg import sql

# the columns of the views as released (a dashboard reads them by name and type)
VIEW_COLUMNS = {
    "ablation": (
        "run_id bigint, model text, index_size integer, seed integer, p_at_1 double precision, "
        "min_class_size integer, queries_per_class integer, n_classes integer, scaled boolean, "
        "finished_at timestamp with time zone, is_latest boolean"
    ),
    "ann_quality": (
        "run_id bigint, model text, scope text, exact_run_id bigint, ef_search integer, hnsw_m "
        "integer, hnsw_ef_construction integer, plan_uses_index boolean, n_queries integer, n_index "
        "integer, recall1 double precision, recall3 double precision, recall5 double precision, "
        "recall10 double precision, dp1_micro double precision, dp3_micro double precision, dp5_micro "
        "double precision, dp10_micro double precision, dp1_macro double precision, dp3_macro double "
        "precision, dp5_macro double precision, dp10_macro double precision, ann_queries_per_s double "
        "precision, exact_queries_per_s double precision, finished_at timestamp with time zone"
    ),
    "class_precision": (
        "model text, mode text, scope text, run_id bigint, class text, kind text, modality text, "
        "region text, finding text, n_queries integer, class_index_size integer, p1 double precision, "
        "p3 double precision, p5 double precision, p10 double precision"
    ),
    "classification_metrics": (
        "run_id bigint, f1_micro double precision, f1_macro double precision, auprc_micro double "
        "precision, auprc_macro double precision, auroc_micro double precision, auroc_macro double "
        "precision"
    ),
    "eval_runs": (
        "run_id bigint, kind text, model text, mode text, ef_search integer, scope text, profile "
        "text, vectors text, n_queries integer, n_index integer, queries_per_s double precision, "
        "total_s double precision, params jsonb, index_params jsonb, metrics jsonb, timings jsonb, "
        "code_version text, started_at timestamp with time zone, finished_at timestamp with time "
        "zone, all_embedded boolean"
    ),
    "knn_k_curve": ("run_id bigint, model text, k integer, val_f1_micro double precision"),
    "knn_results": (
        "run_id bigint, model text, mode text, k integer, f1_micro double precision, f1_macro double "
        "precision, auprc_micro double precision, auprc_macro double precision, auroc_micro double "
        "precision, auroc_macro double precision, val_f1_micro double precision, k_min integer, k_max "
        "integer, index_splits text, n_queries integer, n_index integer, finished_at timestamp with "
        "time zone, is_latest boolean"
    ),
    "latest_retrieval_run": (
        "run_id bigint, model text, mode text, scope text, profile text, vectors text, finished_at "
        "timestamp with time zone"
    ),
    "leaderboard": (
        "model text, mode text, scope text, profile text, vectors text, run_id bigint, n_queries "
        "integer, n_index integer, ef_search integer, p1_micro double precision, p3_micro double "
        "precision, p5_micro double precision, p10_micro double precision, p1_macro double precision, "
        "p3_macro double precision, p5_macro double precision, p10_macro double precision, "
        "finished_at timestamp with time zone"
    ),
    "linear_results": (
        "run_id bigint, model text, seed integer, f1_micro double precision, f1_macro double "
        "precision, auprc_micro double precision, auprc_macro double precision, auroc_micro double "
        "precision, auroc_macro double precision, epochs_run integer, best_epoch integer, "
        "stopped_early boolean, n_queries integer, n_index integer, finished_at timestamp with time "
        "zone, is_latest boolean"
    ),
}


def test_report_views_keep_their_columns(db: str) -> None:
    with psycopg.connect(db) as conn:
        rows = conn.execute(
            """
            select c.relname, string_agg(a.attname || ' ' || format_type(a.atttypid, a.atttypmod), ', '
                                         order by a.attnum)
            from pg_class c join pg_attribute a on a.attrelid = c.oid and a.attnum > 0
            where c.relnamespace = 'cbir_report'::regnamespace and c.relname = any(%s)
            group by c.relname
            """,
            (list(VIEW_COLUMNS),),
        ).fetchall()
    assert dict(rows) == VIEW_COLUMNS


def _view(conn: psycopg.Connection, view: str, columns: str, run_id: int | None = None) -> list[tuple]:
    """``columns`` of ``cbir_report.<view>``: the rows of one run, or every row by run id."""
    query = sql.SQL(
        "select {} from cbir_report.{} where %(run)s::bigint is null or run_id = %(run)s order by run_id"
    )
    return conn.execute(query.format(sql.SQL(columns), sql.Identifier(view)), {"run": run_id}).fetchall()


NS = (1, 3, 5, 10)


def test_retrieval_pivots_put_each_metric_in_its_column(db: str) -> None:
    with psycopg.connect(db) as conn:
        exact = store_eval_run(conn, "retrieval", "toy", "exact")
        ann = store_eval_run(conn, "retrieval", "toy", "ann", f'{{"exact_run_id": {exact}}}')
        store_metrics(conn, exact, [("P", n, avg, 0.5) for n in NS for avg in ("micro", "macro")])
        store_metrics(conn, ann, [("P", n, "micro", 0.1 * n + 0.00001) for n in NS])
        store_metrics(conn, ann, [("P", n, "macro", 0.01 * n) for n in NS])
        store_metrics(conn, ann, [("recall", n, "micro", 1 - 0.01 * n) for n in NS])
        store_metrics(conn, ann, [("dP", n, "micro", -0.001 * n) for n in NS])
        store_metrics(conn, ann, [("dP", n, "macro", -0.002 * n) for n in NS])
        p_at_n = "p1_micro, p3_micro, p5_micro, p10_micro, p1_macro, p3_macro, p5_macro, p10_macro"
        board = _view(conn, "leaderboard", p_at_n + ", n_queries, n_index", ann)
        exact_board = _view(conn, "leaderboard", p_at_n, exact)
        quality = _view(
            conn,
            "ann_quality",
            "recall1, recall3, recall5, recall10, dp1_micro, dp3_micro, dp5_micro, dp10_micro,"
            " dp1_macro, dp3_macro, dp5_macro, dp10_macro, exact_run_id",
        )
    # rounded to 4 decimals: 0.10001 shows as 0.1
    assert board == [(0.1, 0.3, 0.5, 1.0, 0.01, 0.03, 0.05, 0.1, 10, 90)]
    assert quality == [
        (0.99, 0.97, 0.95, 0.9, -0.001, -0.003, -0.005, -0.01, -0.002, -0.006, -0.01, -0.02, exact)
    ]
    assert exact_board == [(0.5,) * 8]


def test_retrieval_run_without_metrics_shows_nulls(db: str) -> None:
    with psycopg.connect(db) as conn:
        run = store_eval_run(conn, "retrieval", "toy", "exact")
        rows = _view(conn, "leaderboard", "p1_micro, p10_macro, n_queries", run)
    assert rows == [(None, None, 10)]


def test_classification_pivots_and_latest(db: str) -> None:
    six = [(m, 0, avg) for m in ("f1", "auprc", "auroc") for avg in ("micro", "macro")]
    with psycopg.connect(db) as conn:
        knn_old = store_eval_run(
            conn, "knn", "toy", "exact", '{"k": 5, "k_min": 1, "k_max": 9, "index_splits": "train"}'
        )
        knn = store_eval_run(
            conn, "knn", "toy", "exact", '{"k": 7, "k_min": 1, "k_max": 9, "index_splits": "train"}'
        )
        lin = store_eval_run(
            conn,
            "linear",
            "toy",
            None,
            '{"seed": 3, "epochs_run": 12, "best_epoch": 9, "stopped_early": true}',
        )
        for run, base in ((knn_old, 0.2), (knn, 0.4), (lin, 0.6)):
            store_metrics(conn, run, [(m, at, avg, base + 0.01 * i) for i, (m, at, avg) in enumerate(six)])
        store_metrics(conn, knn, [("val_f1", k, "micro", 0.3 + 0.01 * k) for k in (1, 7, 9)])
        knn_rows = _view(
            conn,
            "knn_results",
            "run_id, k, f1_micro, f1_macro, auprc_micro, auprc_macro, auroc_micro, auroc_macro,"
            " val_f1_micro, k_min, k_max, index_splits, n_queries, n_index, is_latest",
        )
        lin_rows = _view(
            conn,
            "linear_results",
            "run_id, seed, f1_micro, auroc_macro, epochs_run, best_epoch, stopped_early, is_latest",
        )
    assert knn_rows == [
        (knn_old, 5, 0.2, 0.21, 0.22, 0.23, 0.24, 0.25, None, 1, 9, "train", 10, 90, False),
        (knn, 7, 0.4, 0.41, 0.42, 0.43, 0.44, 0.45, 0.37, 1, 9, "train", 10, 90, True),
    ]
    # the linear run is the latest of its own kind, whatever the kNN runs of the same model
    assert lin_rows == [(lin, 3, 0.6, 0.65, 12, 9, True, True)]
