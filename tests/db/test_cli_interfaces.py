"""The command line as scripts and narrow terminals meet it: at ``COLUMNS=80`` every listing stays within
80 columns and shows every value whole; ``--format json`` (JSON lines) and ``--format csv`` carry the
same values as the library; usage errors are one line with exit code 2; ``--version``; the
"no vectors yet" and typo messages."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess

import psycopg
import pytest
from dbhelp import cbir_pg, cli, fetch_one
from test_sql_api import build, make_synthetic

from cbir_pg import __version__
from cbir_pg.db.database import Database

LONG_LABEL_REGION = "breastultrasoundregion"  # keys longer than a narrow column: US/breastultrasoundregion/f0


@pytest.fixture
def listed(db: str):
    """A synthetic benchmark with long label keys and dataset keys, indexed and evaluated once."""
    syn = make_synthetic(db, n=200)
    with psycopg.connect(db) as conn:
        conn.execute(
            "update cbir.label set region = %s, key = modality || '/' || %s || '/' || finding",
            (LONG_LABEL_REGION, LONG_LABEL_REGION),
        )
        conn.execute("update cbir.dataset set key = key || '_cohort_with_a_long_name'")
    build(db)
    from cbir_pg.eval.retrieval import evaluate_retrieval

    evaluate_retrieval(Database(db), "toy", mode="exact", progress=False)
    return syn


def run(db: str, *args: str, columns: int | None = 80) -> str:
    return cli(db, *args, columns=columns).output


def _narrow(out: str, width: int = 80) -> None:
    long = [ln for ln in out.splitlines() if len(ln) > width]
    assert not long, long


def test_listings_fit_80_columns_and_keep_every_value(db: str, listed) -> None:
    from cbir_pg.datasets import label_overview
    from cbir_pg.index import index_status

    out = run(db, "labels", "list")
    _narrow(out)
    for lab in label_overview(Database(db)):
        assert lab.key in out and all(d in out for d in lab.datasets)

    out = run(db, "index", "status")
    _narrow(out)
    (st,) = index_status(Database(db), "toy")
    for value in (st.index_name, f"{st.rows:,}", str(st.dim), "hnsw", str(st.m), str(st.ef_construction)):
        assert value in out

    out = run(db, "search", "--image-id", str(listed.ids[0]), "--model", "toy", "-k", "5")
    _narrow(out)
    from cbir_pg.search import search

    for h in search(Database(db), "toy", image_id=listed.ids[0], k=5):
        assert h.uri in out and h.label in out and h.dataset in out and f"{h.similarity:.4f}" in out

    out = run(db, "eval", "show")
    _narrow(out)
    assert "micro P@10" in out and "toy" in out

    for args in (("models", "list", "--no-weights"), ("datasets", "list"), ("ingest", "status")):
        _narrow(run(db, *args))
    assert "biomedclip" in run(db, "models", "list", "--no-weights")


def test_piped_tables_print_at_full_width(db: str, listed) -> None:
    out = run(db, "eval", "show", columns=None)
    header = [ln for ln in out.splitlines() if "P@1" in ln]
    assert header and max(len(ln) for ln in out.splitlines()) > 80  # one row per line, not folded
    assert any("toy" in ln and "exact" in ln for ln in out.splitlines())


def test_json_and_csv_carry_the_library_values(db: str, listed) -> None:
    from cbir_pg.datasets import label_overview
    from cbir_pg.search import search

    rows = [json.loads(ln) for ln in run(db, "labels", "list", "--format", "json").splitlines()]
    assert {r["label"]: r["images"] for r in rows} == {
        lab.key: lab.images for lab in label_overview(Database(db))
    }

    hits = search(Database(db), "toy", image_id=listed.ids[3], k=4)
    out = run(db, "search", "--image-id", str(listed.ids[3]), "--model", "toy", "-k", "4", "--format", "json")
    got = [json.loads(ln) for ln in out.splitlines()]
    assert [(g["rank"], g["image_id"], g["similarity"], g["age"]) for g in got] == [
        (h.rank, h.image_id, h.similarity, h.age) for h in hits
    ]
    out = run(db, "search", "--image-id", str(listed.ids[3]), "--model", "toy", "-k", "4", "--format", "csv")
    table = list(csv.DictReader(io.StringIO(out)))
    assert [int(r["image_id"]) for r in table] == [h.image_id for h in hits]
    assert [r["uri"] for r in table] == [h.uri for h in hits]

    (show,) = [json.loads(ln) for ln in run(db, "eval", "show", "--format", "json").splitlines()]
    assert show["model"] == "toy" and show["mode"] == "exact" and 0 <= show["micro_p1"] <= 1
    with psycopg.connect(db) as conn:
        p1 = conn.execute("select p1_micro from cbir_report.leaderboard where model = 'toy'").fetchone()[0]
    assert show["micro_p1"] == pytest.approx(p1, abs=1e-9)

    status = [json.loads(ln) for ln in run(db, "index", "status", "--format", "json").splitlines()]
    assert status[0]["model"] == "toy" and status[0]["kind"] == "hnsw" and status[0]["vectors"] == 200
    ingest = list(csv.DictReader(io.StringIO(run(db, "ingest", "status", "--format", "csv"))))
    assert sum(int(r["done"]) for r in ingest) == 200
    ds = [json.loads(ln) for ln in run(db, "datasets", "list", "--format", "json").splitlines()]
    assert sum(d["images"] for d in ds) == 200 and all("splits" in d for d in ds)
    models = [
        json.loads(ln) for ln in run(db, "models", "list", "--no-weights", "--format", "json").splitlines()
    ]
    assert {"efficientnet_lite0", "biomedclip"} <= {m["key"] for m in models}


def test_missing_vectors_and_typos_are_told_apart(db: str, listed) -> None:
    r = cli(db, "search", "--image-id", str(listed.ids[0]), "--model", "biomedclip", code=1)
    assert isinstance(r.exception, Exception)
    assert str(r.exception) == "no vectors for biomedclip yet: run cbir-pg ingest --model biomedclip"
    r = cli(db, "index", "status", "--model", "biomedclp", code=1)
    msg = str(r.exception)
    assert msg.startswith("unknown model 'biomedclp' (did you mean 'biomedclip'?); valid keys:")


def _cbir(*args: str) -> subprocess.CompletedProcess:
    return cbir_pg(*args, env={**os.environ, "COLUMNS": "80"}, timeout=120)


def test_usage_errors_are_one_line_with_exit_code_2() -> None:
    for args in (["search", "--no-such-option"], ["db", "nothing"], ["eval", "show", "--format", "xml"]):
        r = _cbir(*args)
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert r.returncode == 2 and len(lines) == 1, r.stderr
        assert lines[0].startswith("error: ")
    assert "--help" in _cbir("search", "--no-such-option").stderr


def test_version_and_flag_pairs() -> None:
    r = _cbir("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"cbir-pg {__version__}"
    helptext = _cbir("search", "--help").stdout
    assert "--exclude-same-patient" in helptext and "--include-same-patient" in helptext


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_eval_export_writes_runs_neighbours_and_metrics(db: str, listed, tmp_path, fmt: str) -> None:
    import pandas as pd

    out = tmp_path / "export"
    text = run(db, "eval", "export", "--out", str(out), "--format", fmt, columns=None)
    read = pd.read_parquet if fmt == "parquet" else pd.read_csv
    runs, neigh, metrics = (read(out / f"{t}.{fmt}") for t in ("runs", "neighbours", "metrics"))
    assert f"neighbours.{fmt} ({len(neigh):,} rows)" in text
    with psycopg.connect(db) as conn:
        run_id, nq = conn.execute(
            "select id, n_queries from cbir.eval_run where kind = 'retrieval'"
        ).fetchone()
        n_metrics = conn.execute("select count(*) from cbir.eval_metric").fetchone()[0]
        q, nb, sims, rel = conn.execute(
            "select query_image_id, neighbours, similarities, relevant from cbir.eval_query"
            " where run_id = %s order by query_image_id limit 1",
            (run_id,),
        ).fetchone()
    assert list(runs["run_id"]) == [run_id] and runs["model"].iloc[0] == "toy"
    assert len(metrics) == n_metrics and set(metrics["metric"]) == {"P"}
    assert neigh["query_image_id"].nunique() == nq and len(neigh) == nq * 10
    mine = neigh[neigh["query_image_id"] == q].sort_values("rank")
    assert list(mine["rank"]) == list(range(1, 11))
    assert list(mine["neighbour_image_id"]) == list(nb)
    assert list(mine["relevant"].astype(bool)) == list(rel)
    assert mine["similarity"].to_numpy() == pytest.approx(sims, abs=1e-6)
    assert mine["query_label"].iloc[0].startswith(("CT/", "MR/"))


def test_results_and_status_as_json(db: str, listed) -> None:
    """Commands that print a result table also speak JSON: stdout is data, the prose goes to stderr."""
    r = cli(
        db,
        *[
            "eval",
            "retrieval",
            "--model",
            "toy",
            "--mode",
            "exact",
            "--n",
            "1,5",
            "--no-progress",
            "--format",
            "json",
        ],
    )
    rows = [json.loads(ln) for ln in r.stdout.splitlines()]
    assert [(x["mode"], x["average"]) for x in rows] == [("exact", "micro"), ("exact", "macro")]
    p1, p5 = fetch_one(
        db,
        "select p1_micro, p5_micro from cbir_report.leaderboard where model = %s and mode = 'exact'",
        ("toy",),
    )
    assert rows[0]["p1"] == pytest.approx(p1) and rows[0]["p5"] == pytest.approx(p5)
    status = json.loads(run(db, "db", "status", "--format", "json"))
    assert status["server"] == "external" and status["schema_revision"] == status["head_revision"]


def test_index_build_takes_maintenance_work_mem(db: str) -> None:
    from cbir_pg.app.cli.index import parse_size_mb
    from cbir_pg.errors import ConfigError

    assert (parse_size_mb("2GB"), parse_size_mb("512mb"), parse_size_mb("300")) == (2048, 512, 300)
    for bad in ("lots", "2 XB", "10MB"):
        with pytest.raises(ConfigError):
            parse_size_mb(bad)
    make_synthetic(db, n=120)
    out = run(
        db, "index", "build", "--model", "toy", "--maintenance-work-mem", "96MB", "--recall-queries", "0"
    )
    assert "maintenance_work_mem 96 MB" in out
