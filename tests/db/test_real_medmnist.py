"""The "done when" checks on real data: the combined BreastMNIST + PneumoniaMNIST benchmark imported by
the real importer, embedded with ``efficientnet_lite0`` (real ImageNet weights), indexed, searched,
evaluated; and the README's SQL examples run as written."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cbir_pg.db.connect import connect
from cbir_pg.db.database import Database

pytestmark = [pytest.mark.real_data, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
MODEL = "efficientnet_lite0"


def _cli(dsn: str, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, COLUMNS="200")
    return subprocess.run(
        [sys.executable, "-m", "cbir_pg", "--dsn", dsn, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )


def test_lite0_fills_every_benchmark_image_with_a_unit_vector(medmnist_lite0_db: str) -> None:
    with connect(medmnist_lite0_db) as c:
        images = c.execute("select count(*) from cbir.image").fetchone()[0]
        eligible = c.execute("select count(*) from cbir.image where not excluded").fetchone()[0]
        dupes = c.execute("select count(*) from cbir.image where exclusion_reason = 'duplicate'").fetchone()[
            0
        ]
        rows, distinct = c.execute(
            "select count(*), count(distinct image_id) from cbir.embedding_efficientnet_lite0"
        ).fetchone()
        norms = np.array(
            [r[0] for r in c.execute("select vector_norm(embedding) from cbir.embedding_efficientnet_lite0")]
        )
        status = c.execute(
            "select sum(done), sum(pending), sum(failed) from cbir.ingest_status where encoder = %s", (MODEL,)
        ).fetchone()
    assert images in (780 + 5030, 780 + 5856)  # pneumoniamnist_subset.npz or the full pneumoniamnist.npz
    assert eligible == images - dupes and dupes > 0  # exact pixel duplicates are flagged, not embedded
    assert rows == distinct == eligible
    assert np.all(np.abs(norms - 1.0) < 1e-5)
    assert tuple(int(x) for x in status) == (eligible, 0, 0)


def test_index_build_and_search_cli_on_real_images(medmnist_lite0_db: str, tmp_path: Path) -> None:
    built = _cli(medmnist_lite0_db, "index", "build", "--model", MODEL)
    assert built.returncode == 0, built.stderr
    with connect(medmnist_lite0_db) as c:
        qid, label = c.execute(
            "select i.id, l.key from cbir.image i join cbir.label l on l.id = i.label_id"
            " where i.split = 'test' and not i.excluded order by i.id limit 1"
        ).fetchone()
    png = tmp_path / "grid.png"
    out = _cli(
        medmnist_lite0_db, "search", "--image-id", str(qid), "--model", MODEL, "-k", "8", "--png", str(png)
    )
    assert out.returncode == 0, out.stderr
    assert label in out.stdout
    ranks = re.findall(r"^\W*(\d+)\s+\W\s*\d+ ", out.stdout, flags=re.MULTILINE)  # "│ 1 │ 4257 train/..."
    assert [int(r) for r in ranks][:8] == list(range(1, 9))
    with Image.open(png) as im:
        assert im.width > im.height > 0


def test_eval_compare_exact_show_and_leaderboard_agree(medmnist_lite0_db: str) -> None:
    out = _cli(medmnist_lite0_db, "eval", "retrieval", "--model", MODEL, "--compare-exact", "--no-progress")
    assert out.returncode == 0, out.stderr
    for token in ("P@1", "P@10", "micro", "macro", "recall"):
        assert token in out.stdout
    show = _cli(medmnist_lite0_db, "eval", "show")
    assert show.returncode == 0 and MODEL in show.stdout
    with connect(medmnist_lite0_db) as c:
        rows = c.execute(
            "select mode, p1_micro, p10_micro, p1_macro, n_queries from cbir_report.leaderboard where model = %s",
            (MODEL,),
        ).fetchall()
        recall10 = c.execute(
            "select recall10 from cbir_report.ann_quality where model = %s", (MODEL,)
        ).fetchone()[0]
        test_images = c.execute(
            "select count(*) from cbir.image where split = 'test' and not excluded and label_id is not null"
        ).fetchone()[0]
    by_mode = {r[0]: r for r in rows}
    assert set(by_mode) == {"ann", "exact"}
    for mode, p1, p10, p1_macro, n_queries in by_mode.values():
        assert n_queries == test_images  # every labelled, non-excluded test image is a query
        # the printed table holds the stored numbers (4 decimals)
        assert f"{p1:.4f}" in show.stdout and f"{p10:.4f}" in show.stdout and f"{p1_macro:.4f}" in show.stdout
        # real ImageNet features retrieve far better than chance on this 4-class benchmark
        assert p1 > 0.7, mode
    assert recall10 >= 0.98
    assert abs(by_mode["ann"][1] - by_mode["exact"][1]) <= 0.01


def _import_dicom_and_embed(dsn: str) -> None:
    import pydicom

    from cbir_pg.datasets import import_dataset
    from cbir_pg.ingest.worker import run_ingest

    import_dataset(
        Database(dsn),
        "dicom",
        Path(pydicom.__file__).parent / "data" / "test_files",
        name="pydicom",
        progress=False,
    )
    run_ingest(Database(dsn), MODEL, datasets=["pydicom"], progress=False)


def test_readme_sql_examples_run_as_written(medmnist_lite0_db: str) -> None:
    from docs_sql import sql_blocks

    _import_dicom_and_embed(medmnist_lite0_db)  # the cohort example needs patients with sex and age
    statements = sql_blocks(REPO / "README.md")
    assert len(statements) >= 3  # the ef_search setting, the cohort query, the label counts
    results = []
    with connect(medmnist_lite0_db) as c:  # one transaction, as a psql session would run them
        for stmt in statements:
            cur = c.execute(stmt)
            if cur.description:
                results.append(cur.fetchall())
        c.rollback()  # e.g. the example role is not kept
    cohort, labels = results[0], results[1]
    assert cohort, "the cohort example returned no rows"
    assert len(cohort) <= 10 and [r[0] for r in cohort] == list(range(1, len(cohort) + 1))
    assert [r[2] for r in cohort] == sorted((r[2] for r in cohort), reverse=True)
    with connect(medmnist_lite0_db) as c:
        q_sex, q_age = c.execute(
            "select p.sex, p.age from cbir.image i join cbir.patient p on p.id = i.patient_id"
            " where p.sex is not null and p.age is not null order by p.age desc, i.id limit 1"
        ).fetchone()
    assert all(r[5] == q_sex and abs(r[6] - q_age) <= 20 for r in cohort)
    assert sum(r[1] for r in labels) == 50
    assert {r[0] for r in labels} <= {
        "US/breast/malignant",
        "US/breast/benign_or_normal",
        "XR/chest/normal",
        "XR/chest/pneumonia",
        "(no label)",
    }


def test_docs_sql_api_examples_run_on_real_data(medmnist_lite0_db: str) -> None:
    from docs_sql import SQL_LANGS, fenced_blocks, split_statements

    blocks = fenced_blocks((REPO / "docs" / "sql-api.md").read_text(), SQL_LANGS)
    assert blocks
    with connect(medmnist_lite0_db) as c:
        for _, body in blocks:  # one block is one session's example (e.g. save a cohort, then use it)
            for stmt in split_statements(body):
                c.execute(stmt)
            c.rollback()


def test_demo_end_to_end_reuses_what_exists(
    medmnist_lite0_db: str, medmnist_dir: Path, tmp_path: Path
) -> None:
    """`cbir-pg demo` on the database that already holds the benchmark: nothing is imported or embedded
    twice; it evaluates, runs kNN, writes the report and prints Table 2; a second run reuses the runs."""
    out_dir = tmp_path / "report"
    first = _cli(
        medmnist_lite0_db, "demo", "--data-dir", str(medmnist_dir), "--out", str(out_dir), "--no-progress"
    )
    assert first.returncode == 0, first.stderr
    assert "[9/9]" in first.stdout and "0 new images" in first.stdout and "0 new vectors" in first.stdout
    assert "P@10" in first.stdout and "recall" in first.stdout and "kNN (k=" in first.stdout
    assert (out_dir / "index.html").is_file() and len(list(out_dir.glob("*.png"))) >= 3
    # the demo runs kNN only: the page says why the linear-probe columns are empty
    assert "cbir-pg eval linear --model KEY" in (out_dir / "index.html").read_text()
    with connect(medmnist_lite0_db) as c:
        runs = c.execute("select count(*) from cbir.eval_run").fetchone()[0]
    second = _cli(
        medmnist_lite0_db, "demo", "--data-dir", str(medmnist_dir), "--out", str(out_dir), "--no-progress"
    )
    assert second.returncode == 0, second.stderr
    assert "reused" in second.stdout
    # the report's inputs did not change: no figure is redrawn (each PNG carries its inputs' hash)
    assert "figures (3 unchanged, not redrawn)" in second.stdout, second.stdout
    with connect(medmnist_lite0_db) as c:
        assert c.execute("select count(*) from cbir.eval_run").fetchone()[0] == runs  # no duplicate runs
    # the README's sample output is this run's: same steps, same exact-search Table 2 row (ANN rows and
    # timings vary with the machine and the HNSW build, so they are not compared)
    from readme_sample import sample, step_lines, table_row

    assert step_lines(first.stdout) == step_lines(sample())
    assert table_row(first.stdout, MODEL, "exact") == table_row(sample(), MODEL, "exact")
    # the printed P@1 is the stored one
    with connect(medmnist_lite0_db) as c:
        p1 = c.execute(
            "select p1_micro from cbir_report.leaderboard where model = %s and mode = 'ann'", (MODEL,)
        ).fetchone()[0]
    assert f"{p1:.4f}" in first.stdout and f"{p1:.4f}" in second.stdout


def test_demo_without_data_is_one_clear_line(tmp_path: Path) -> None:
    env = dict(os.environ, HF_HUB_OFFLINE="1", CBIR_PG_HOME=str(tmp_path / "home"))
    env.pop("CBIR_PG_DATA_DIR", None)
    for extra in (["--data-dir", str(tmp_path / "missing")], []):
        r = subprocess.run(
            [sys.executable, "-m", "cbir_pg", "demo", *extra],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        lines = [x for x in r.stderr.splitlines() if x.strip()]
        assert r.returncode == 1 and len(lines) == 1, r.stderr
        assert "CBIR_PG_DATA_DIR" in lines[0] and "breastmnist" in lines[0]
        assert not (tmp_path / "home" / "pgdata").exists()  # failed before starting anything
