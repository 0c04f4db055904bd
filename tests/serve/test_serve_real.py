"""`cbir-pg serve` on the real MedMNIST benchmark (the shared efficientnet_lite0 template, cloned once for
this module, with a retrieval run so the results page has numbers):

1. the JSON API through an HTTP client: every endpoint, every error status, `/api/images/{id}/similar`
   equal to `cbir.similar_images`, uploads equal to the CLI's search, the bad-input catalogue survived;
2. a real browser (Debian's headless Chromium driven by Playwright) against `cbir-pg serve` started as a
   subprocess: upload, filter, click a neighbour, image page, results page, a bad upload; screenshots;
3. no response body of either ever holds a patient key, an image uri or a dataset root.
"""

from __future__ import annotations

import io
import os
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "reliability"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import create_database, drop_database  # noqa: E402
from dbhelp import cbir_pg  # noqa: E402
from relhelp import bad_image_files  # noqa: E402
from servehelp import (  # noqa: E402
    CHROMIUM,
    FLAGS,
    http_client,
    login_owner,
    read_login_link,
    start_serve,
    stop_serve,
    stored_file,
    wait_true,
    wait_up,
)

pytestmark = [pytest.mark.real_data, pytest.mark.slow]
MODEL = "efficientnet_lite0"
#: the second model the browser session adds while the page runs (a test encoder: fast to embed)
SECOND = "tiny_cnn"


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def served_db(pg_server_dsn: str, medmnist_lite0_template: str) -> str:
    """A clone of the real-data template with one ANN-vs-exact retrieval run stored."""
    name = f"srv_{uuid.uuid4().hex[:10]}"
    dsn = create_database(pg_server_dsn, name, template=medmnist_lite0_template)
    _cbir(dsn, "eval", "retrieval", "--model", MODEL, "--compare-exact")
    yield dsn
    drop_database(pg_server_dsn, name)


@pytest.fixture(scope="module")
def secrets_of(served_db: str) -> dict[str, list[str]]:
    """What must never reach a client: patient keys, image uris, dataset roots, absolute file paths."""
    with psycopg.connect(served_db) as c:
        keys = [r[0] for r in c.execute("select patient_key from cbir.patient")]
        uris = [r[0] for r in c.execute("select uri from cbir.image")]
        roots = [r[0] for r in c.execute("select root from cbir.dataset where root is not null")]
    assert keys and uris and roots
    return {"patient keys": keys, "uris": uris, "roots": roots}


def assert_no_secrets(bodies: list[tuple[str, bytes]], secrets: dict[str, list[str]]) -> None:
    assert bodies
    needles = {kind: [v.encode() for v in values] for kind, values in secrets.items()}
    for url, body in bodies:
        for kind, values in needles.items():
            leaked = [v for v in values if v in body]
            assert not leaked, f"{url} leaks {kind}: {leaked[:3]}"


@pytest.fixture(scope="module")
def home() -> Path:
    return Path(os.environ["CBIR_PG_HOME"])


@pytest.fixture(scope="module")
def api(served_db: str, home: Path):
    """An HTTP client logged in with the one-time link (the server owner: every dataset)."""
    from cbir_pg.app.serve import build_app
    from cbir_pg.app.serve.auth import AuthConfig, new_login_token

    auth = AuthConfig(login_token=new_login_token())
    app, store = build_app(served_db, home, max_upload_bytes=2 * 1024 * 1024, auth=auth)
    app.state.login_token = auth.login_token
    seen: list[tuple[str, bytes]] = []

    with http_client(app) as client:
        login_owner(client, app)
        plain_request = client.request

        def request(method, url, *args, **kwargs):
            r = plain_request(method, url, *args, **kwargs)
            seen.append((f"{method} {url}", r.content))
            return r

        client.request = request
        client.seen = seen
        yield client
    store.close()


def owner_similar(dsn: str, image_id: int, k: int, split: str | None = None) -> list[tuple[int, int, float]]:
    with psycopg.connect(dsn) as c:
        return [
            (r[0], r[1], r[2])
            for r in c.execute(
                "select rank, image_id, similarity from cbir.similar_images(%s, %s, %s, %s)",
                (image_id, MODEL, k, split),
            )
        ]


def some_images(dsn: str) -> dict[str, int]:
    with psycopg.connect(dsn) as c:
        rows = c.execute(
            "select d.key, min(i.id) from cbir.image i join cbir.dataset d on d.id = i.dataset_id "
            "where not i.excluded and i.split = 'test' group by d.key"
        ).fetchall()
    return dict(rows)


def new_image_png(dsn: str, image_id: int) -> bytes:
    """A real image that is not in the database: a stored one mirrored and enlarged."""
    im = Image.open(stored_file(dsn, image_id)).transpose(Image.Transpose.FLIP_LEFT_RIGHT).resize((112, 112))
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


# --------------------------------------------------------------------------- 1. the API
def test_models_lists_the_model_with_its_vectors(api, served_db: str) -> None:
    r = api.get("/api/models")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    with psycopg.connect(served_db) as c:
        n = c.execute(f"select count(*) from cbir.embedding_{MODEL}").fetchone()[0]
    got = {m["model"]: m for m in r.json()["models"]}
    assert got[MODEL]["vectors"] == n and got[MODEL]["dim"] > 0


def test_image_metadata_has_no_patient_data_or_path(api, served_db: str) -> None:
    image_id = next(iter(some_images(served_db).values()))
    r = api.get(f"/api/images/{image_id}")
    assert r.status_code == 200
    info = r.json()
    assert info["image_id"] == image_id and info["split"] == "test" and MODEL in info["models"]
    assert info["label"] and info["dataset"] in ("breastmnist", "pneumoniamnist")
    assert not {"uri", "root", "patient_id", "patient_key", "content_hash", "extra", "source_labels"} & set(
        info
    )
    assert api.get("/api/images/999999999").status_code == 404
    assert api.get("/api/images/999999999").json()["error"] == "image 999999999 does not exist"
    for bad in ("abc", "0", "-3", "99999999999999999999999"):
        r = api.get(f"/api/images/{bad}")
        assert r.status_code == 400, bad
        assert set(r.json()) == {"error", "status"}


def test_thumbnail_is_cached_once_with_etag(api, served_db: str, home: Path) -> None:
    image_id = next(iter(some_images(served_db).values()))
    r = api.get(f"/api/images/{image_id}/thumbnail")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    etag = r.headers["etag"]
    assert "max-age" in r.headers["cache-control"] and "private" in r.headers["cache-control"]
    im = Image.open(io.BytesIO(r.content))
    assert im.size == (28, 28)  # MedMNIST images are 28 px: never scaled up
    cached = list((home / "cache" / "serve").rglob(etag.strip('"') + ".png"))
    assert len(cached) == 1 and cached[0].read_bytes() == r.content
    again = api.get(f"/api/images/{image_id}/thumbnail", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    # the full-size view comes from the same decode path and cache
    full = api.get(f"/api/images/{image_id}/pixels")
    assert full.status_code == 200 and Image.open(io.BytesIO(full.content)).size == (28, 28)
    assert api.get("/api/images/999999999/thumbnail").status_code == 404


def test_similar_equals_the_sql_function(api, served_db: str) -> None:
    for image_id in some_images(served_db).values():
        for k, split in ((10, None), (100, None), (7, "train")):
            params = {"model": MODEL, "k": k} | ({"split": split} if split else {})
            r = api.get(f"/api/images/{image_id}/similar", params=params)
            assert r.status_code == 200, r.text
            got = [(h["rank"], h["image_id"], h["similarity"]) for h in r.json()["neighbours"]]
            want = owner_similar(served_db, image_id, k, split)
            assert [g[:2] for g in got] == [w[:2] for w in want]
            assert np.allclose([g[2] for g in got], [w[2] for w in want], atol=1e-9)
            body = r.json()
            assert body["query"]["image_id"] == image_id and len(body["neighbours"]) == k
            assert all(h["match"] == (h["label"] == body["query"]["label"]) for h in body["neighbours"])
            if split:
                assert {h["split"] for h in body["neighbours"]} == {split}


def test_label_filter_keeps_the_ranked_order_of_that_label(api, served_db: str) -> None:
    image_id = some_images(served_db)["pneumoniamnist"]
    label = "US/breast/malignant"  # a small class far from a chest X-ray query
    r = api.get(f"/api/images/{image_id}/similar", params={"model": MODEL, "k": 5, "label": label})
    assert r.status_code == 200, r.text
    hits = r.json()["neighbours"]
    assert [h["rank"] for h in hits] == [1, 2, 3, 4, 5] and {h["label"] for h in hits} == {label}
    with psycopg.connect(served_db) as c:
        ranked = [
            row[0]
            for row in c.execute(
                "select s.image_id from cbir.similar_images(%s, %s, 5000) s join cbir.image i on i.id = s.image_id "
                "join cbir.label l on l.id = i.label_id where l.key = %s order by s.rank limit 5",
                (image_id, MODEL, label),
            )
        ]
    assert [h["image_id"] for h in hits] == ranked


@pytest.mark.parametrize(
    ("params", "status", "fragment"),
    [
        ({"split": "holdout"}, 400, "invalid split"),
        ({"k": "0"}, 400, "k must be between 1 and 100"),
        ({"k": "101"}, 400, "k must be between 1 and 100"),
        ({"k": "ten"}, 400, "k must be a number"),
        ({"dataset": "nosuch"}, 400, "unknown dataset"),
        ({"dataset": "Bad Name!"}, 400, "invalid dataset name"),
        ({"label": "XR/chest/unicorn"}, 400, "unknown label"),
        ({"sex": "X"}, 400, "invalid sex"),
        ({"age_min": "50", "age_max": "20"}, 400, "age range is empty"),
        ({"age_min": "old"}, 400, "must be a number"),
        ({"exclude_same_patient": "maybe"}, 400, "true or false"),
        ({"model": "nosuch_model"}, 404, "unknown model"),
        ({"model": "DROP TABLE"}, 400, "invalid model name"),
    ],
)
def test_similar_errors(api, served_db: str, params: dict, status: int, fragment: str) -> None:
    image_id = next(iter(some_images(served_db).values()))
    r = api.get(f"/api/images/{image_id}/similar", params={"model": MODEL, **params})
    assert r.status_code == status, r.text
    assert fragment in r.json()["error"] and r.json()["status"] == status
    assert "Traceback" not in r.text


def test_similar_unknown_image_is_404(api) -> None:
    r = api.get("/api/images/999999999/similar", params={"model": MODEL})
    assert r.status_code == 404 and "does not exist" in r.json()["error"]


def test_upload_of_a_stored_image_uses_its_vector(api, served_db: str) -> None:
    image_id = some_images(served_db)["breastmnist"]
    data = stored_file(served_db, image_id).read_bytes()
    r = api.post(
        "/api/search", files={"file": ("x.png", data, "image/png")}, data={"model": MODEL, "k": "10"}
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["query"]["stored"] is True and body["query"]["image_id"] == image_id
    assert [(h["rank"], h["image_id"]) for h in body["neighbours"]] == [
        w[:2] for w in owner_similar(served_db, image_id, 10)
    ]


def test_upload_of_a_new_image_is_embedded_like_the_cli_search(api, served_db: str, tmp_path: Path) -> None:
    from cbir_pg.db.database import Database
    from cbir_pg.search import search

    image_id = some_images(served_db)["pneumoniamnist"]
    png = new_image_png(served_db, image_id)
    path = tmp_path / "new.png"
    path.write_bytes(png)
    with psycopg.connect(served_db) as c:
        n_before = c.execute("select count(*) from cbir.image").fetchone()[0]
    r = api.post(
        "/api/search",
        files={"file": ("new.png", png, "image/png")},
        data={"model": MODEL, "k": "10", "split": "train"},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["query"] == {"image_id": None, "stored": False, "label": None, "embedded_on_the_fly": True}
    cli = search(Database(served_db), MODEL, path=path, k=10, split="train")
    assert [h["image_id"] for h in body["neighbours"]] == [h.image_id for h in cli]
    assert np.allclose([h["similarity"] for h in body["neighbours"]], [h.similarity for h in cli], atol=1e-5)
    assert {h["split"] for h in body["neighbours"]} == {"train"}
    assert all(h["match"] is None for h in body["neighbours"])  # the query's label is unknown
    # the upload was not stored
    with psycopg.connect(served_db) as c:
        assert c.execute("select count(*) from cbir.image").fetchone()[0] == n_before
    # a new image has no patient to exclude
    r = api.post(
        "/api/search",
        files={"file": ("new.png", png, "image/png")},
        data={"model": MODEL, "exclude_same_patient": "true"},
    )
    assert r.status_code == 400 and "patient" in r.json()["error"]


BAD = [b for b in bad_image_files() if b.data is not None]


@pytest.mark.parametrize("bad", BAD, ids=[b.kind for b in BAD])
def test_bad_uploads_get_a_json_error_and_the_server_survives(api, bad) -> None:
    from cbir_pg.images import DecodeError, decode_bytes

    try:  # a catalogue item this installation can decode (e.g. JPEG-LS with pylibjpeg) is no error
        decode_bytes(bad.data, "the upload")
    except DecodeError:
        pass
    else:
        pytest.skip(f"{bad.kind} decodes here (a decoder plugin is installed)")
    r = api.post("/api/search", files={"file": (bad.name, bad.data, "image/png")}, data={"model": MODEL})
    want = 413 if bad.kind == "decompression_bomb" else 415
    assert r.status_code == want, r.text
    err = r.json()["error"]
    assert err.startswith("the upload: ") and "\n" not in err and "Traceback" not in r.text
    assert any(reason in err for reason in bad.reasons)
    assert api.get("/api/models").status_code == 200


def test_upload_limits_and_malformed_requests(api) -> None:
    big = b"\x89PNG\r\n\x1a\n" + os.urandom(3 * 1024 * 1024)
    r = api.post("/api/search", files={"file": ("big.png", big, "image/png")}, data={"model": MODEL})
    assert r.status_code == 413 and "2 MiB limit" in r.json()["error"]
    r = api.post("/api/search", data={"model": MODEL})
    assert r.status_code == 400 and "file" in r.json()["error"]
    r = api.post("/api/search", content=b"{}", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "multipart" in r.json()["error"]
    r = api.post("/api/search", files={"file": ("a.png", b"x", "image/png")}, data={"model": "nosuch_model"})
    assert r.status_code == 404


def test_leaderboard_is_the_report_views(api, served_db: str) -> None:
    r = api.get("/api/leaderboard")
    assert r.status_code == 200
    body = r.json()
    with psycopg.connect(served_db) as c:
        rows = c.execute("select model, mode, p1_micro from cbir_report.leaderboard").fetchall()
    assert sorted((x["model"], x["mode"], x["p1_micro"]) for x in body["leaderboard"]) == sorted(rows)
    assert {x["mode"] for x in body["leaderboard"]} == {"ann", "exact"}
    assert body["class_precision"] and body["ann_quality"][0]["model"] == MODEL


def test_openapi_describes_every_endpoint_and_unknown_paths_are_json_404(api) -> None:
    spec = api.get("/api/openapi.json").json()
    assert {
        "/api/models",
        "/api/images/{image_id}",
        "/api/images/{image_id}/thumbnail",
        "/api/images/{image_id}/similar",
        "/api/search",
        "/api/leaderboard",
    } <= set(spec["paths"])
    assert "multipart/form-data" in spec["paths"]["/api/search"]["post"]["requestBody"]["content"]
    r = api.get("/api/nope")
    assert r.status_code == 404 and r.json() == {"error": "no such page", "status": 404}
    page = api.get("/nope")
    assert (
        page.status_code == 404
        and "text/html" in page.headers["content-type"]
        and "no such page" in page.text
    )


def test_pages_render_server_side(api, served_db: str) -> None:
    image_id = some_images(served_db)["breastmnist"]
    r = api.get("/", params={"image_id": image_id, "model": MODEL, "k": 12})
    assert r.status_code == 200 and r.text.count('class="card ') == 12 + 1  # the query and 12 neighbours
    assert "Show more (k = 32)" in r.text
    r = api.get("/", params={"image_id": image_id, "model": MODEL, "split": "holdout"})
    assert r.status_code == 400 and "invalid split" in r.text and "Traceback" not in r.text
    r = api.get(f"/images/{image_id}")
    assert r.status_code == 200 and f"Image {image_id}" in r.text
    r = api.get("/results")
    assert r.status_code == 200 and MODEL in r.text and 'id="leaderboard"' in r.text


def test_no_api_response_leaks_patient_keys_or_paths(api, secrets_of) -> None:
    assert_no_secrets(api.seen, secrets_of)


# --------------------------------------------------------------------------- 2. a real browser
def duplicate_pair(dsn: str) -> tuple[int, int, bool, bool]:
    """A pixel duplicate, the image it duplicates, and whether their labels / splits differ (one that
    differs when the benchmark has one)."""
    with psycopg.connect(dsn) as c:
        row = c.execute(
            "select i.id, o.id, i.label_id is distinct from o.label_id, i.split is distinct from o.split "
            "from cbir.image i join cbir.image o on o.id = i.duplicate_of "
            "order by (i.label_id is distinct from o.label_id or i.split is distinct from o.split) desc, i.id "
            "limit 1"
        ).fetchone()
    assert row, "the MedMNIST benchmark has pixel duplicates"
    return row


def _check_side_by_side_ranks(columns: list[dict]) -> None:
    """Under each neighbour, its rank in the other model's list (or that it is not there) is true."""
    ranks = {c["model"]: {i: r for r, i in enumerate(c["ids"], start=1)} for c in columns}
    for col in columns:
        for image_id, also in zip(col["ids"], col["also"], strict=True):
            for other, rank_of in ranks.items():
                if other == col["model"]:
                    continue
                if image_id in rank_of:
                    assert f"#{rank_of[image_id]} with {other}" in also, (image_id, also)
                else:
                    assert also == "in no other model's list", (image_id, also)


def _cbir(dsn: str, *args: str) -> None:
    """``python -m cbir_pg --dsn DSN ARGS``, which must succeed."""
    out = cbir_pg("--dsn", dsn, *args, timeout=900)
    assert out.returncode == 0, out.stderr


def _report_figure(dsn: str, report: Path) -> None:
    """A real report figure: the Fig. 2 style grid of one query, drawn by the project's own code."""
    from cbir_pg.db.database import Database
    from cbir_pg.search import search_with_query, write_search_grid

    db = Database(dsn)
    query, hits = search_with_query(db, MODEL, image_id=some_images(dsn)["pneumoniamnist"], k=6)
    write_search_grid(db, query, hits, report / f"fig2_retrievals_{MODEL}.png", tile=96)
    db.close()


@pytest.fixture(scope="module")
def server(served_db: str, tmp_path_factory) -> tuple[str, str]:
    """``cbir-pg serve`` as a subprocess: its base URL and the one-time login link it printed."""
    if CHROMIUM is None:
        pytest.skip("no Chromium installed (apt-get install chromium): the browser tests need one")
    import httpx

    report = tmp_path_factory.mktemp("report")
    _report_figure(served_db, report)
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    proc, base = start_serve(served_db, log, "--report-dir", str(report), "--preload", MODEL)
    wait_up(proc, base, log)
    # up, and every route but the login form needs a login
    assert httpx.get(base + "/api/models", timeout=5).status_code == 401
    # a second model added while the page runs (issue 26, item 1: it must just appear), and a fused
    # leaderboard row with a long model name (item 3: the per-class table must still fit)
    _cbir(served_db, "ingest", "--model", SECOND, "--device", "cpu", "--no-progress", "--loader-workers", "0")
    _cbir(served_db, "eval", "retrieval", "--fuse", f"{MODEL},{SECOND}", "--fusion", "mean")
    link = read_login_link(log)
    assert link.startswith(base + "/login?token=")
    yield base, link
    stop_serve(proc)
    text = log.read_text()
    assert "Traceback" not in text
    # the one-time token was printed once, on the console, and is written nowhere else
    assert text.count(link.split("token=")[1]) == 1
    # --preload built the encoder before the first request; the session's uploads reused it
    assert text.count(f"loaded encoder {MODEL} (config ") == 1, text[-2000:]


@dataclass
class _Session:
    """One browser page of the session, with every response it received: ``flush`` reads the bodies
    of the page's responses while the page still holds them."""

    page: Any
    server: str
    db: str
    shots: Path
    bodies: list[tuple[str, bytes]] = field(default_factory=list)
    statuses: list[tuple[str, int]] = field(default_factory=list)
    pending: list = field(default_factory=list)

    def __post_init__(self) -> None:
        # patience, not a timing assertion: the first upload imports torch and loads the encoder
        self.page.set_default_timeout(300_000)
        self.page.set_default_navigation_timeout(300_000)
        self.page.on("response", lambda resp: self.pending.append(resp))
        self.page.on("response", lambda resp: self.statuses.append((resp.url, resp.status)))

    def flush(self) -> None:
        """Read the bodies of this page's responses while the page still holds them. Chromium drops the
        body of a response the page navigated away from (e.g. an image still loading when a link was
        clicked); a GET is then fetched again with the page's own request context, so every body the
        session received is still scanned."""
        from playwright.sync_api import Error as PlaywrightError

        while self.pending:
            resp = self.pending.pop()
            if resp.status in (301, 302, 303, 304, 307, 308):
                continue
            try:
                body = resp.body()
            except PlaywrightError:
                if resp.request.method != "GET":
                    raise
                body = self.page.context.request.get(resp.url).body()
            self.bodies.append((resp.url, body))

    def shot(self, name: str, full_page: bool = True) -> None:
        self.page.screenshot(path=str(self.shots / name), full_page=full_page)

    def cards(self) -> list[dict]:
        return self.page.eval_on_selector_all(
            "#grid figure.card",
            "els => els.map(e => ({id: +e.dataset.imageId, cls: e.className, text: e.innerText,"
            " loaded: e.querySelector('img').naturalWidth}))",
        )

    def model_columns(self, selector: str) -> list[dict]:
        """Each model column's model, neighbour ids and "also" notes."""
        return self.page.eval_on_selector_all(
            selector,
            "els => els.map(e => ({model: e.dataset.model, ids: [...e.querySelectorAll('figure.card')]"
            ".map(c => +c.dataset.imageId), also: [...e.querySelectorAll('figure.card')]"
            ".map(c => (c.querySelector('.also') || {innerText: ''}).innerText)}))",
        )

    def choose_dataset(self, dataset: str) -> None:
        """Pick a dataset in the form (the page reloads with it) and wait for the grid."""
        with self.page.expect_navigation():
            self.page.select_option("#dataset", dataset)
        self.page.wait_for_selector("#grid")


def _log_in_with_the_link(s: _Session, link: str) -> None:
    """Not logged in: the login form; the one-time link logs in (as the owner) and lands on search,
    which has a model picker with the real model."""
    page = s.page
    page.goto(s.server + "/")
    assert page.title() == "log in · cbir-pg" and page.url.startswith(s.server + "/login?next=")
    page.goto(link)
    assert page.url == s.server + "/" and page.inner_text("#who") == "owner"
    assert page.title() == "search · cbir-pg"
    assert MODEL in page.inner_text("#model")
    s.shot("0-search.png", full_page=False)
    s.flush()


def _upload_with_a_filter(s: _Session, upload: Path) -> list[dict]:
    """Upload a real image that is not stored, with a filter (split = test); the neighbours' cards.
    Issue 26, item 4: the upload is kept; a new filter re-runs it (the form and the results agree)."""
    page = s.page
    page.select_option("#split", "test")
    page.set_input_files("#file", str(upload))
    page.click("#go")
    page.wait_for_selector("#grid")
    assert page.inner_text("#summary") == f"10 most similar with {MODEL}"
    assert "uploaded, embedded on the fly" in page.inner_text(".card.query")
    # patience, not timing: on a loaded machine the thumbnails arrive after the grid
    wait_true(
        page,
        "[...document.querySelectorAll('#grid figure.card img')].every(i => i.complete && i.naturalWidth > 0)",
    )
    hits = s.cards()
    assert len(hits) == 10 and all(" · test" in h["text"] for h in hits)
    assert all(h["loaded"] > 0 for h in hits)  # every thumbnail really rendered
    assert all("unknown" in h["cls"] for h in hits)  # no label known: grey frames
    s.shot("1-upload.png")
    s.flush()
    first_upload = [h["id"] for h in hits]
    assert "upload=" in page.url and page.is_visible("#kept")
    s.choose_dataset("breastmnist")
    assert "uploaded, embedded on the fly" in page.inner_text(".card.query")
    refiltered = s.cards()
    assert len(refiltered) == 10 and all("breastmnist · test" in h["text"] for h in refiltered)
    assert "dataset: breastmnist" in page.inner_text(".filters")
    s.shot("1b-upload-refiltered.png")
    s.flush()
    s.choose_dataset("")
    assert [h["id"] for h in s.cards()] == first_upload
    return hits


def _compare_models_for_the_upload(s: _Session, first_upload: list[int]) -> None:
    """Item 5: the model comparison for an uploaded image (the model added while the page ran is there)."""
    page = s.page
    assert SECOND in page.inner_text("#model")
    page.click("#compare-link")
    page.wait_for_selector("#compare .model-col")
    columns = s.model_columns("#compare .model-col")
    assert [c["model"] for c in columns] == [MODEL, SECOND]
    assert columns[0]["ids"] == first_upload[:8]  # the same filters (split = test)
    assert "own similarity scale" in page.inner_text("#scale-note")
    _check_side_by_side_ranks(columns)
    s.shot("1c-upload-compare.png")
    s.flush()


def _neighbour_becomes_the_query(s: _Session, hits: list[dict]) -> tuple[int, list[dict]]:
    """Click the second neighbour: it becomes the query, the filter stays, the owner's SQL agrees;
    then another filter on the page, the dataset (re-runs the query by id). The query and its cards."""
    page = s.page
    second = hits[1]["id"]
    page.click("#grid figure:nth-child(2) a.thumb")
    page.wait_for_selector("#grid")
    assert f"image {second}" in page.inner_text(".card.query")
    hits = s.cards()
    assert len(hits) == 10 and second not in [h["id"] for h in hits]
    assert all(" · test" in h["text"] for h in hits)
    assert all(("match" in h["cls"]) or ("miss" in h["cls"]) for h in hits)  # green/red frames
    want = owner_similar(s.db, second, 10, "test")
    assert [h["id"] for h in hits] == [w[1] for w in want]
    s.flush()
    s.choose_dataset("breastmnist")
    hits = s.cards()
    assert hits and all("breastmnist · test" in h["text"] for h in hits)
    assert "dataset: breastmnist" in page.inner_text(".filters")
    s.shot("2-neighbour.png")
    s.flush()
    return second, hits


def _same_patient_only(s: _Session, second: int, hits: list[dict]) -> None:
    """Item 5: "same patient only". MedMNIST has one image per patient, so for this step another
    breastmnist test image is given the query's patient; the page must show exactly what the owner's
    own SQL returns for that cohort, and that image among them."""
    from cbir_pg.cohort import Cohort

    page = s.page
    other = hits[2]["id"]
    with psycopg.connect(s.db, autocommit=True) as c:
        (old_patient,) = c.execute("select patient_id from cbir.image where id = %s", (other,)).fetchone()
        c.execute(
            "update cbir.image set patient_id = (select patient_id from cbir.image where id = %s) where id = %s",
            (second, other),
        )
    try:
        with page.expect_navigation():
            page.check("#same_patient")
        page.wait_for_selector("#grid")
        assert not page.is_checked("#exclude_same_patient")
        same = [h["id"] for h in s.cards()]
        cohort = Cohort(split="test", dataset="breastmnist", patient="same")
        with psycopg.connect(s.db) as c:
            want = [
                r[0]
                for r in c.execute(
                    "select image_id from cbir.similar_images_v2(%s, %s, 10, %s) order by rank",
                    (second, MODEL, cohort.sql()),
                )
            ]
        assert other in same and same == want
        with page.expect_navigation():
            page.uncheck("#same_patient")
        page.wait_for_selector("#grid")
        assert [h["id"] for h in s.cards()] == [h["id"] for h in hits]
    finally:
        with psycopg.connect(s.db, autocommit=True) as c:
            c.execute("update cbir.image set patient_id = %s where id = %s", (old_patient, other))
    s.flush()


def _image_page(s: _Session, first: int) -> None:
    """The image page of the first neighbour: metadata, full view, neighbours per model; item 5: two
    models side by side, ranks compared, scales explained; item 11: the badge explained."""
    page = s.page
    page.click("#grid figure:nth-child(1) a.details")
    page.wait_for_selector("#meta")
    assert page.inner_text("#title") == f"Image {first}"
    meta = page.inner_text("#meta")
    assert "breastmnist" in meta and "test" in meta and "US/breast/" in meta
    wait_true(page, "document.getElementById('full').naturalWidth > 0")
    assert len(page.query_selector_all(f'.model-col[data-model="{MODEL}"] figure.card')) == 8
    columns = s.model_columns(".model-col")
    assert [c["model"] for c in columns] == [MODEL, SECOND]
    _check_side_by_side_ranks(columns)
    assert "compare ranks" in page.inner_text("#scale-note")
    badge = page.get_attribute("#meta .chip.kind", "title")
    assert badge.startswith(("anatomical: ", "pathological: ")) and page.inner_text("#kind-help") == badge
    s.shot("3-image.png")
    s.flush()


def _duplicate_note(s: _Session) -> None:
    """Item 5: a pixel duplicate says when it has another label or split."""
    dup, orig, other_label, other_split = duplicate_pair(s.db)
    s.page.goto(f"{s.server}/images/{orig}")
    note = s.page.inner_text("#duplicates")
    assert f"image {dup}" in note
    assert ("another label" in note) == other_label and ("another split" in note) == other_split
    if not (other_label or other_split):
        assert "same label and split" in note
    s.flush()


def _results_page(s: _Session) -> None:
    """The results page: the leaderboard a person would read, the figure."""
    page = s.page
    page.goto(s.server + "/results")
    board = page.inner_text("#leaderboard")
    with psycopg.connect(s.db) as c:
        p1 = c.execute(
            "select p1_micro from cbir_report.leaderboard where model = %s and mode = 'ann'", (MODEL,)
        ).fetchone()[0]
    assert MODEL in board and f"{p1:.3f}" in board
    assert page.query_selector_all("#classes tbody tr")
    wait_true(page, "[...document.querySelectorAll('.figures img')].every(i => i.naturalWidth > 0)")
    s.shot("4-results.png")
    s.flush()


def _wide_table_and_figure(s: _Session) -> None:
    """Item 3: at 1400 px, with the fused model's long name, no per-class column is cut off; item 7:
    captions say what a figure shows; a click enlarges it, Escape closes it."""
    page = s.page
    page.set_viewport_size({"width": 1400, "height": 900})
    fused = f"mean({MODEL},{SECOND})"
    assert fused in page.inner_text("#classes")
    assert page.evaluate(
        "(() => { const t = document.getElementById('classes'), p = t.closest('.panel');"
        " return p.scrollWidth <= p.clientWidth"
        " && t.getBoundingClientRect().right <= p.getBoundingClientRect().right; })()"
    )
    assert "queries" in page.inner_text("#classes thead") and page.is_visible("#kind-legend")
    caption = page.inner_text(".figures figcaption")
    assert caption.startswith(f"Fig. 2 · {MODEL}: sampled test queries")
    assert page.get_attribute(".figures img", "alt") == caption
    page.click(".figures a.enlarge")
    wait_true(page, "document.getElementById('lightbox').open")
    big = page.evaluate("document.querySelector('#lightbox img').getBoundingClientRect().width")
    small = page.evaluate("document.querySelector('.figures img').getBoundingClientRect().width")
    assert big > small and page.inner_text("#lightbox .caption") == caption
    s.shot("4b-figure-enlarged.png", full_page=False)
    page.keyboard.press("Escape")
    wait_true(page, "!document.getElementById('lightbox').open")
    page.set_viewport_size({"width": 1280, "height": 900})
    s.flush()


def _bad_upload(s: _Session, notes: Path) -> None:
    """A bad upload: a clear message on the page, no stack trace, and the server goes on."""
    page = s.page
    page.goto(s.server + "/")
    s.flush()
    page.set_input_files("#file", str(notes))
    page.click("#go")
    page.wait_for_selector("#error")
    assert "not a readable image format" in page.inner_text("#error")
    assert "Traceback" not in page.content()
    s.shot("5-bad-upload.png", full_page=False)
    s.flush()
    page.goto(s.server + "/")
    assert page.title() == "search · cbir-pg"
    s.flush()


def test_browser_session(server: tuple[str, str], served_db: str, secrets_of, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    server, link = server
    upload = tmp_path / "new-chest.png"
    upload.write_bytes(new_image_png(served_db, some_images(served_db)["pneumoniamnist"]))
    notes = tmp_path / "notes.png"
    notes.write_bytes(b"Patient notes, not an image.\n" * 20)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        s = _Session(browser.new_page(viewport={"width": 1280, "height": 900}), server, served_db, tmp_path)
        _log_in_with_the_link(s, link)
        hits = _upload_with_a_filter(s, upload)
        _compare_models_for_the_upload(s, [h["id"] for h in hits])
        second, hits = _neighbour_becomes_the_query(s, hits)
        _same_patient_only(s, second, hits)
        _image_page(s, hits[0]["id"])
        _duplicate_note(s)
        _results_page(s)
        _wide_table_and_figure(s)
        _bad_upload(s, notes)
        browser.close()

    # item 7: the favicon is served (no 404 on any page of the session)
    assert not [u for u, st in s.statuses if st == 404], [u for u, st in s.statuses if st == 404]
    import httpx

    icon = httpx.get(server + "/static/favicon.svg", timeout=30)  # every page links it: no /favicon.ico
    assert icon.status_code == 200 and icon.headers["content-type"].startswith("image/svg+xml")
    assert len(s.bodies) > 40  # pages, assets, thumbnails, full views, figures
    assert any(b"<html" in body for _, body in s.bodies) and any(
        body[:4] == b"\x89PNG" for _, body in s.bodies
    )
    assert_no_secrets(s.bodies, secrets_of)
    print(f"screenshots: {tmp_path}")
