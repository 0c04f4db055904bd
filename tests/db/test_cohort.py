"""One cohort filter everywhere (issue 27): ``cbir.resolve_cohort`` validates it once, the SQL search
functions filter natively with exactly k rows, and the SQL function, the CLI, the façade, the API and
evaluation return identical rows for the same cohort. Saved cohorts by name; one clear message per
bad value, whichever interface it came through."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import psycopg
import pytest
from psycopg.types.json import Jsonb
from test_sql_api import build, exact_top_k, make_synthetic

from cbir_pg.cohort import Cohort, as_cohort
from cbir_pg.db.database import Database
from cbir_pg.errors import ConfigError
from cbir_pg.search import search

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "serve"))
from servehelp import http_client, login_owner, serve_app  # noqa: E402, F401


def _meta(conn: psycopg.Connection, ids: list[int]) -> dict[str, np.ndarray]:
    """Per image (in ``ids`` order): label key, split, dataset key, modality, patient id, sex, age."""
    rows = conn.execute(
        "select i.id, l.key, i.split, d.key, i.modality, i.patient_id, p.sex, p.age from cbir.image i"
        " join cbir.dataset d on d.id = i.dataset_id left join cbir.label l on l.id = i.label_id"
        " left join cbir.patient p on p.id = i.patient_id"
    ).fetchall()
    by_id = {r[0]: r[1:] for r in rows}
    cols = list(zip(*[by_id[i] for i in ids], strict=True))
    names = ("label", "split", "dataset", "modality", "patient", "sex", "age")
    return {n: np.asarray(c, dtype=object) for n, c in zip(names, cols, strict=True)}


def _mask(meta: dict[str, np.ndarray], ids: list[int], cohort: dict, query: int) -> np.ndarray:
    """The cohort's rows computed in NumPy, independently of the SQL predicate."""
    keep = np.asarray(ids) != query
    for key in ("label", "split", "dataset", "modality", "sex"):
        if key in cohort:
            keep &= meta[key] == cohort[key]
    age = np.asarray([np.nan if a is None else a for a in meta["age"]], dtype=float)
    if "age_min" in cohort:
        keep &= age >= cohort["age_min"]
    if "age_max" in cohort:
        keep &= age <= cohort["age_max"]
    if cohort.get("patient") == "same":
        keep &= meta["patient"] == meta["patient"][ids.index(query)]
    if cohort.get("patient") == "other":
        keep &= meta["patient"] != meta["patient"][ids.index(query)]
    if "image_ids" in cohort:
        keep &= np.isin(np.asarray(ids), cohort["image_ids"])
    return keep


def _sql(conn, query: int, k: int, cohort: dict, model: str = "toy") -> list[tuple[int, int, float]]:
    return conn.execute(
        "select rank, image_id, similarity from cbir.similar_images_v2(%s, %s, %s, %s)",
        (query, model, k, Jsonb(cohort)),
    ).fetchall()


RESTRICTIVE = [
    {"label": "CT/body/f0", "sex": "M", "age_min": 30, "age_max": 50},
    {"patient": "same"},
    {"patient": "other", "split": "test", "dataset": "beta"},
    {"sex": "F", "age_max": 25, "modality": "MR"},
    {"label": "MR/body/f3", "split": "val"},
]


@pytest.mark.parametrize("cohort", RESTRICTIVE)
def test_exact_k_under_restrictive_filters_against_numpy(db: str, conn, cohort: dict) -> None:
    syn = make_synthetic(db, n=1500, dim=16, n_patients=120)
    build(db)  # HNSW: the filters run inside iterative index scans
    meta = _meta(conn, syn.ids)
    found = wanted = 0
    for query in syn.ids[:8]:
        mask = _mask(meta, syn.ids, cohort, query)
        want = exact_top_k(syn, syn.vector(query), 10, mask)
        got = _sql(conn, query, 10, cohort)
        # exactly k rows whenever k images match, every one of them in the cohort, best first
        assert len(got) == min(10, int(mask.sum())) == len(want)
        assert set(r[1] for r in got) <= set(np.asarray(syn.ids)[mask].tolist())
        assert [r[2] for r in got] == sorted((r[2] for r in got), reverse=True)
        found += len({r[1] for r in got} & set(want))
        wanted += len(want)
        exact = conn.execute(
            "select image_id from cbir.knn_v2(null, 'toy', 10, cbir.resolve_cohort(%s, %s, true), 'exact', %s)",
            (Jsonb(cohort), query, query),
        ).fetchall()
        assert [r[0] for r in exact] == want, (cohort, query)  # the exact method is NumPy's ranking
    assert found / wanted >= 0.8  # HNSW under a filter is approximate, but close


def test_saved_cohort_by_name_equals_its_filter_and_ids(db: str, conn) -> None:
    syn = make_synthetic(db, n=600)
    listed = syn.ids[100:400]
    saved = conn.execute(
        "select name, created_by from cbir.save_cohort('study A', %s, %s, 'women, test split')",
        (Jsonb({"sex": "F", "split": "test"}), listed),
    ).fetchone()
    conn.commit()
    assert saved == ("study A", conn.execute("select current_user").fetchone()[0])
    q = syn.ids[3]
    by_name = _sql(conn, q, 8, {"cohort": "study A"})
    spelled = _sql(conn, q, 8, {"sex": "F", "split": "test", "image_ids": listed})
    assert by_name == spelled and len(by_name) == 8
    # other keys narrow it further; a key the saved cohort already sets is refused
    assert _sql(conn, q, 8, {"cohort": "study A", "dataset": "alpha"}) == _sql(
        conn, q, 8, {"sex": "F", "split": "test", "image_ids": listed, "dataset": "alpha"}
    )
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="already sets split"):
        _sql(conn, q, 8, {"cohort": "study A", "split": "train"})
    conn.rollback()
    # the images a saved cohort names, for joins and BI
    members = [
        r[0] for r in conn.execute('select image_id from cbir.cohort_images(\'{"cohort": "study A"}\')')
    ]
    meta = _meta(conn, syn.ids)
    mask = _mask(meta, syn.ids, {"sex": "F", "split": "test", "image_ids": listed}, -1)
    assert members == sorted(np.asarray(syn.ids)[mask].tolist())
    assert conn.execute(
        "select n_listed_images from cbir_report.cohorts where name = 'study A'"
    ).fetchone() == (300,)
    # search by name from Python too
    hits = search(Database(db), "toy", image_id=q, k=8, cohort=Cohort(cohort="study A"))
    assert [(h.rank, h.image_id) for h in hits] == [(r[0], r[1]) for r in by_name]


def _cli_rows(db: str, args: list[str]) -> list[tuple[int, int]]:
    out = subprocess.run(
        [sys.executable, "-m", "cbir_pg", "--dsn", db, "search", *args, "--format", "json"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        check=False,
    )
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
    return [(r["rank"], r["image_id"]) for r in rows]


def test_every_interface_returns_the_same_rows(db: str, conn, serve_app) -> None:  # noqa: F811
    """SQL function, CLI, façade, API and evaluation: the same cohort gives the same ranked rows."""
    import cbir_pg
    from cbir_pg.eval.topn import IndexFilter, topn

    syn = make_synthetic(db, n=900, n_patients=40)  # no index: every interface ranks exactly
    cohorts = [
        {"label": "CT/body/f0", "sex": "F", "age_min": 30, "age_max": 60, "split": "train"},
        {"patient": "same"},
        {"patient": "other", "dataset": "alpha", "sex": "M"},
    ]
    client = cbir_pg.connect(db)
    app = serve_app(db)
    with http_client(app) as api:
        login_owner(api, app)
        for cohort in cohorts:
            c = Cohort(**cohort)
            for q in syn.ids[10:13]:
                want = [(r[0], r[1]) for r in _sql(conn, q, 7, cohort)]
                assert len(want) >= 1
                cli_args = ["--image-id", str(q), "--model", "toy", "-k", "7"]
                for key, value in c.as_params().items():
                    flag = "--" + key.replace("_", "-")
                    cli_args += [flag] if value is True else [flag, str(value)]
                assert _cli_rows(db, cli_args) == want, ("cli", cohort)
                df = client.search(q, "toy", 7, cohort=c)
                assert list(zip(df["rank"], df["image_id"], strict=True)) == want, ("facade", cohort)
                flat = {k: ("true" if v is True else v) for k, v in c.as_params().items()}
                r = api.get(f"/api/images/{q}/similar", params={"model": "toy", "k": 7, **flat})
                assert r.status_code == 200, r.text
                assert [(h["rank"], h["image_id"]) for h in r.json()["neighbours"]] == want, (
                    "api",
                    cohort,
                )
                if c.relative_to_query:
                    continue  # an evaluation's index set is the same for every query
                top = topn(
                    Database(db),
                    "toy",
                    query_ids=[q],
                    index_filter=IndexFilter(splits=None, cohort=c),
                    n=7,
                    mode="exact",
                    progress=False,
                )
                got = [int(i) for i in top.neighbour_ids[0][: int(top.counts[0])]]
                assert got == [w[1] for w in want], ("evaluation", cohort)


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"split": "holdout"}, "invalid split"),
        ({"sex": "female"}, "invalid sex"),
        ({"age_min": "60", "age_max": "40"}, "age range is empty"),
        ({"age_min": "-1"}, "between 0 and 150"),
        ({"label": "XR/chest/unicorn"}, "unknown label"),
        ({"dataset": "Bad Name!"}, "invalid dataset name"),
        ({"dataset": "gamma"}, "unknown dataset"),
        ({"cohort": "nobody saved this"}, "unknown cohort"),
    ],
)
def test_a_bad_value_is_one_clear_message_everywhere(db: str, conn, params: dict, fragment: str) -> None:
    syn = make_synthetic(db, n=200)
    q = syn.ids[0]
    cohort = Cohort.from_params(params)
    with pytest.raises(psycopg.errors.InvalidParameterValue) as sql_err:
        _sql(conn, q, 5, cohort.as_json())
    conn.rollback()
    message = sql_err.value.diag.message_primary
    assert fragment in message
    with pytest.raises(ConfigError) as py_err:
        search(Database(db), "toy", image_id=q, k=5, cohort=cohort)
    assert str(py_err.value) == message  # the same one line from Python as from SQL
    cli = subprocess.run(
        [sys.executable, "-m", "cbir_pg", "--dsn", db, "search", "--image-id", str(q), "--model", "toy"]
        + [x for k, v in params.items() for x in ("--" + k.replace("_", "-"), v)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        check=False,
    )
    assert "Traceback" not in cli.stderr
    if cli.returncode == 2:  # the CLI itself refuses some values as usage errors (a split), naming the option
        assert "Invalid value for '--" in cli.stderr
    else:
        assert cli.returncode == 1 and message in " ".join(cli.stderr.split())


def test_cohort_values_parse_and_round_trip() -> None:
    c = Cohort.from_params(
        {
            "label": "XR/chest/normal",
            "sex": "F",
            "age_min": "40",
            "age_max": " ",
            "exclude_same_patient": "on",
        }
    )
    assert c == Cohort(label="XR/chest/normal", sex="F", age_min=40.0, patient="other")
    assert c.exclude_same_patient and not c.same_patient
    assert Cohort.from_params(c.as_params()) == c
    assert Cohort.from_params({"image_ids": "3, 1,2"}).as_json() == {"image_ids": [3, 1, 2]}
    assert Cohort.from_params({}) == Cohort() and Cohort().is_empty()
    assert as_cohort(Cohort(split="test"), sex="M", same_patient=True) == Cohort(
        split="test", sex="M", patient="same"
    )
    for bad, fragment in [
        ({"age_max": "abc"}, "must be a number"),
        ({"exclude_same_patient": "perhaps"}, "true or false"),
        ({"exclude_same_patient": "1", "same_patient": "1"}, "choose one"),
        ({"image_ids": "1,x"}, "integers"),
    ]:
        with pytest.raises(ConfigError, match=fragment):
            Cohort.from_params(bad)
    with pytest.raises(ConfigError, match="already sets split"):
        as_cohort(Cohort(split="test"), split="train")
    with pytest.raises(ConfigError, match="unknown filter"):
        as_cohort(colour="red")


def test_generated_search_function_follows_the_index(db: str, conn) -> None:
    """cbir.knn__<model> is rewritten when the index changes; results stay exact-k either way."""
    from cbir_pg.index import drop_index

    syn = make_synthetic(db, n=600)
    src = "select prosrc from pg_proc where proname = 'knn__toy'"
    assert "index none" in conn.execute(src).fetchone()[0]
    before = _sql(conn, syn.ids[1], 10, {"split": "train"})
    conn.rollback()
    build(db)
    assert "index embedding_toy_hnsw_idx" in conn.execute(src).fetchone()[0]
    assert len(_sql(conn, syn.ids[1], 10, {"split": "train"})) == 10
    conn.rollback()
    drop_index(Database(db), "toy")
    assert "index none" in conn.execute(src).fetchone()[0]
    assert _sql(conn, syn.ids[1], 10, {"split": "train"}) == before
    conn.rollback()
    conn.execute("delete from cbir.encoder where key = 'toy'")
    assert conn.execute(src).fetchone() is None  # no encoder row: no search function


def test_a_generated_function_whose_header_changed_is_rewritten(db: str, conn) -> None:
    """cbir.knn__<model> and the dispatcher as an older release wrote them, differing from today's only in
    their header (a ROWS or SET clause, outside the body that the refresh compares), are rewritten by the
    next refresh: written by a release before the header's fingerprint (today's body) or after it."""
    make_synthetic(db, n=60)
    fns = {
        "knn__toy": "cbir.search_function_source('toy')",
        "knn_dispatch": "cbir.dispatch_function_source()",
    }
    state = "select prorows, proconfig from pg_proc where proname = %s"
    today = {name: conn.execute(state, (name,)).fetchone() for name in fns}
    assert today["knn__toy"][0] == 10 and "plan_cache_mode=force_generic_plan" in today["knn__toy"][1]
    for wrap in ("", "cbir.fingerprinted"):
        for name, source in fns.items():  # the older header: 1,000 rows, no plan_cache_mode
            old = f"replace(replace({source}, 'rows 10', 'rows 1000'), 'set plan_cache_mode = force_generic_plan', '')"
            conn.execute(conn.execute(f"select {wrap}({old})").fetchone()[0])
            assert conn.execute(state, (name,)).fetchone() != today[name]
        assert conn.execute("select cbir.refresh_search_functions()").fetchone()[0] == 2, wrap
        assert {name: conn.execute(state, (name,)).fetchone() for name in fns} == today
        assert conn.execute("select cbir.refresh_search_functions()").fetchone()[0] == 0  # nothing left to do


def _image_pkey_scans(db: str) -> int:
    with psycopg.connect(db, autocommit=True) as c:
        c.execute("select pg_stat_clear_snapshot()")
        return c.execute(
            "select idx_scan from pg_stat_user_indexes where schemaname = 'cbir' and indexrelname = 'image_pkey'"
        ).fetchone()[0]


def _search_and_flush(db: str, query: int, k: int) -> list[tuple[int, int, float]]:
    with psycopg.connect(db, autocommit=True) as c:
        rows = _sql(c, query, k, {})
        c.execute("select pg_stat_force_next_flush()")
    return rows


def test_a_search_without_an_image_filter_reads_no_image_row_until_one_is_excluded(db: str) -> None:
    """With no image excluded (the partial index cbir.image_excluded is empty) and no image filter, the
    HNSW search reads no image row; once an image is excluded every index row's image is checked again,
    the excluded image is never returned, and the rest are the same neighbours in the same order."""
    syn = make_synthetic(db, n=600)
    build(db)
    q = syn.ids[3]
    before = _image_pkey_scans(db)
    fast = _search_and_flush(db, q, 10)
    fast11 = _search_and_flush(db, q, 11)
    assert _image_pkey_scans(db) == before  # not one image looked up by its key
    assert len(fast) == 10 and q not in [r[1] for r in fast11] and fast == fast11[:10]
    gone = fast[0][1]
    with psycopg.connect(db, autocommit=True) as c:
        c.execute("update cbir.image set excluded = true, exclusion_reason = 'test' where id = %s", (gone,))
    before = _image_pkey_scans(db)
    slow = _search_and_flush(db, q, 10)
    assert _image_pkey_scans(db) >= before + 10  # each index row's image checked
    want = [r for r in fast11 if r[1] != gone]
    assert [r[1:] for r in slow] == [r[1:] for r in want]


def test_openapi_declares_every_search_parameter(db: str, serve_app) -> None:  # noqa: F811
    """Generated clients can call the search endpoints: every filter is a declared parameter."""
    make_synthetic(db, n=50)
    app = serve_app(db)
    with http_client(app) as api:
        login_owner(api, app)
        spec = api.get("/api/openapi.json").json()
    names = {"model", "k", "split", "dataset", "modality", "label", "sex", "age_min", "age_max"}
    names |= {"exclude_same_patient", "same_patient", "cohort"}
    similar = spec["paths"]["/api/images/{image_id}/similar"]["get"]["parameters"]
    assert {p["name"] for p in similar if p["in"] == "query"} == names
    assert {p["name"] for p in similar if p["in"] == "path"} == {"image_id"}
    form = spec["paths"]["/api/search"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert set(form["properties"]) == names | {"file"}
