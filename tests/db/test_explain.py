"""Similarity maps from the database: ``cbir_pg.explain.explain_images``, ``cbir-pg explain`` and
``GET /api/images/{id}/explain`` for every seeded tiny encoder and for efficientnet_lite0 (real weights)
on real MedMNIST images, with the cache; and ``cbir-pg eval explain`` storing its faithfulness rows."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import psycopg
import pytest
from dbhelp import cbir_pg, fetch_all
from explain_seed import MODELS, build_seeded_template
from PIL import Image

from cbir_pg.db.database import Database
from cbir_pg.errors import ConfigError, NotFoundError
from cbir_pg.explain import MapCache, explain_images

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.real_data


@pytest.fixture(scope="module")
def seeded(pg_server_dsn: str, template_db: str, medmnist_dir: Path):
    from conftest import _dsn_for, drop_database

    name = build_seeded_template(pg_server_dsn, template_db, medmnist_dir)
    yield _dsn_for(pg_server_dsn, name)
    drop_database(pg_server_dsn, name)


def pair(dsn: str, model: str) -> tuple[int, int]:
    """A test image and its top-1 train neighbour under ``model`` (through the SQL API)."""
    with psycopg.connect(dsn) as c:
        q = c.execute(
            "select i.id from cbir.image i where i.split = 'test' order by i.id limit 1"
        ).fetchone()[0]
        n = c.execute("select image_id from cbir.similar_images(%s, %s, 1, 'train')", (q, model)).fetchone()[
            0
        ]
    return q, n


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("method", ["occlusion", "rise", "gradients"])
def test_every_encoder_and_method_gives_two_maps(seeded: str, model: str, method: str, tmp_path: Path):
    from cbir_pg.encoders import get_config

    if model == "efficientnet_lite0" and method == "rise":
        pytest.skip("rise on efficientnet_lite0 runs in the API test (96 forward passes a map on 2 cores)")
    q, n = pair(seeded, model)
    out = explain_images(Database(seeded), q, n, model, method, cache=MapCache(tmp_path))
    size = get_config(model).input_size
    m = out.maps
    assert m.query_map.shape == m.neighbour_map.shape == (size, size)
    assert np.isfinite(m.query_map).all() and np.isfinite(m.neighbour_map).all()
    assert np.abs(m.query_map).max() > 0 and np.abs(m.neighbour_map).max() > 0
    with psycopg.connect(seeded) as c:
        stored = c.execute(
            "select 1 - (a.embedding <=> b.embedding) from cbir.{t} a, cbir.{t} b "
            "where a.image_id = %s and b.image_id = %s".replace("{t}", f"embedding_{model}"),
            (q, n),
        ).fetchone()[0]
    # the maps explain the stored vectors: the pair's similarity is the one the search ranked by
    assert m.similarity == pytest.approx(stored, abs=2e-3)
    png = Image.open(io.BytesIO(out.png()))
    assert png.size == (2 * max(224, size) + 8, max(224, size))
    again = explain_images(Database(seeded), q, n, model, method, cache=MapCache(tmp_path))
    assert again.maps.cached and np.array_equal(again.maps.query_map, m.query_map)


def test_unknown_image_method_and_model_are_refused(seeded: str):
    q, n = pair(seeded, "tiny_cnn")
    with pytest.raises(NotFoundError, match="image 999999"):
        explain_images(Database(seeded), q, 999999, "tiny_cnn")
    with pytest.raises(ConfigError, match="explanation method"):
        explain_images(Database(seeded), q, n, "tiny_cnn", "saliency")
    with pytest.raises(NotFoundError, match="no vectors for efficientnet_lite2"):
        explain_images(Database(seeded), q, n, "efficientnet_lite2")


def test_cli_writes_png_npy_json_and_reuses_the_cache(seeded: str, tmp_path: Path):
    q, n = pair(seeded, "tiny_vit")
    env = {**os.environ, "PYTHONPATH": str(REPO), "CBIR_PG_HOME": str(tmp_path / "home")}
    args = [
        sys.executable,
        "-m",
        "cbir_pg",
        "--dsn",
        seeded,
        "explain",
        str(q),
        str(n),
        "--model",
        "tiny_vit",
    ]
    out = [tmp_path / "m.png", tmp_path / "m.npy", tmp_path / "m.json"]
    first = subprocess.run(
        [*args, "--method", "rise", "--png", str(out[0]), "--npy", str(out[1]), "--json", str(out[2])],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert first.returncode == 0, first.stderr
    assert "similarity" in first.stdout and "from the cache" not in first.stdout
    assert Image.open(out[0]).size == (2 * 224 + 8, 224)
    maps = np.load(out[1])
    assert maps.shape == (2, 32, 32) and maps.dtype == np.float32
    doc = json.loads(out[2].read_text())
    assert doc["method"] == "rise" and doc["params"]["n_masks"] == 96
    assert np.allclose(np.array(doc["query_map"]), maps[0], atol=1e-6)
    second = subprocess.run([*args, "--method", "rise"], capture_output=True, text=True, env=env, timeout=600)
    assert second.returncode == 0 and "from the cache" in second.stdout
    bad = subprocess.run([*args, "--method", "lime"], capture_output=True, text=True, env=env, timeout=600)
    assert bad.returncode == 1 and "unknown explanation method 'lime'" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_api_route_png_json_npy_cache_and_errors(seeded: str, serve_app, reader_role):
    from servehelp import dataset_image_ids, http_client, login

    q, n = pair(seeded, "efficientnet_lite0")
    app = serve_app(seeded)
    reader = reader_role(seeded, datasets=("breastmnist", "pneumoniamnist"))
    outsider = reader_role(seeded, datasets=("breastmnist",))
    with http_client(app) as client:
        url = f"/api/images/{q}/explain?neighbour={n}&model=efficientnet_lite0&method=rise"
        assert client.get(url).status_code == 401  # a login first
        login(client, reader)
        r = client.get(url + "&side=neighbour")
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"
        assert r.headers["x-explain-cached"] == "false"
        assert Image.open(io.BytesIO(r.content)).size == (224, 224)
        j = client.get(url + "&format=json")
        assert j.status_code == 200 and j.headers["x-explain-cached"] == "true"
        body = j.json()
        assert body["query"] == q and body["neighbour"] == n and body["size"] == 224
        assert body["faithfulness"] is None  # nothing measured in this database yet
        npy = client.get(url + "&format=npy")
        assert np.load(io.BytesIO(npy.content)).shape == (2, 224, 224)
        for bad, status, words in [
            (f"/api/images/{q}/explain?model=tiny_cnn", 400, "neighbour"),
            (f"/api/images/{q}/explain?neighbour={n}&model=tiny_cnn&method=lime", 400, "unknown method"),
            (f"/api/images/{q}/explain?neighbour={n}&model=tiny_cnn&format=gif", 400, "unknown format"),
            (f"/api/images/{q}/explain?neighbour=999999&model=tiny_cnn", 404, "999999"),
            (f"/api/images/{q}/explain?neighbour={n}&model=nope", 404, "unknown model"),
        ]:
            r = client.get(bad)
            assert r.status_code == status and words in r.json()["error"], (bad, r.text)
    audited = fetch_all(
        seeded, "select image_ids, filters from cbir.audit_log where action = 'explain' and status = 200"
    )
    chest = dataset_image_ids(seeded, "pneumoniamnist")[0]
    assert audited and audited[0][0] == [q, n] and audited[0][1]["method"] == "rise"
    # a reader who may not see the chest images cannot have their maps either
    with http_client(app) as client:
        login(client, outsider)
        r = client.get(f"/api/images/{chest}/explain?neighbour={q}&model=tiny_cnn&format=json")
        assert r.status_code == 404, r.text
        r = client.get(f"/api/images/{q}/explain?neighbour={chest}&model=tiny_cnn&format=json")
        assert r.status_code == 404, r.text


def test_eval_explain_stores_faithfulness_and_the_api_reports_it(seeded: str, tmp_path: Path, serve_app):
    from servehelp import http_client, login_owner

    env = {**os.environ, "CBIR_PG_HOME": str(tmp_path / "home")}
    args = "eval explain --model tiny_cnn --pairs 4 --method occlusion,gradients --format json"
    r = cbir_pg("--dsn", seeded, *args.split(), env=env, timeout=600)
    assert r.returncode == 0, r.stderr
    rows = {x["method"]: x for x in map(json.loads, r.stdout.splitlines())}  # JSON lines
    assert set(rows) == {"occlusion", "gradients"}
    with psycopg.connect(seeded) as c:
        view = {
            m: (d, i, rd, ri, nb)
            for m, d, i, rd, ri, nb in c.execute(
                "select method, deletion_auc, insertion_auc, random_deletion_auc, random_insertion_auc,"
                " no_better_than_random from cbir_report.explain_faithfulness where model = 'tiny_cnn'"
            )
        }
    assert set(view) == {"occlusion", "gradients"}
    for m, (d, i, rd, ri, nb) in view.items():
        assert rows[m]["deletion"] == pytest.approx(d) and rows[m]["insertion"] == pytest.approx(i)
        assert 0 <= d <= 1.0001 and 0 <= rd <= 1.0001
        assert nb == ((i - d) <= (ri - rd))
        assert (rows[m]["verdict"] == "no better than random") == nb
    q, n = pair(seeded, "tiny_cnn")
    app = serve_app(seeded)
    with http_client(app) as client:
        login_owner(client, app)
        body = client.get(f"/api/images/{q}/explain?neighbour={n}&model=tiny_cnn&format=json").json()
        assert body["faithfulness"]["method"] == "occlusion"
        assert body["faithfulness"]["no_better_than_random"] == view["occlusion"][4]
        page = client.get(f"/?image_id={q}&model=tiny_cnn&k=5").text
        for m, (_, _, _, _, nb) in view.items():
            assert (f'data-method="{m}"' in page) == nb  # the page labels a method no better than random
