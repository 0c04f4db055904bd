"""Each person sees only what they may (issue 22, section 1): two readers, two datasets, each granted
one; in psql, in the API and in the page each sees only its own dataset, its neighbours, thumbnails and
pixels; an upload of the other's image reveals nothing; revoking a grant takes effect at once.

Real MedMNIST images (BreastMNIST for alice, PneumoniaMNIST for bob) with ``tiny_cnn`` vectors, real
login roles, PostgreSQL's own row-level security."""

from __future__ import annotations

import sys
from pathlib import Path

import psycopg
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from servehelp import dataset_image_ids, http_client, login, login_owner, stored_file  # noqa: E402

pytestmark = pytest.mark.real_data
MODEL = "tiny_cnn"
OWN = {"alice": "breastmnist", "bob": "pneumoniamnist"}


def ids_of(db: str, dataset: str) -> set[int]:
    return set(dataset_image_ids(db, dataset))


def stored_png(db: str, image_id: int) -> bytes:
    return stored_file(db, image_id).read_bytes()


@pytest.fixture
def two_readers(reader_role, two_dataset_db: str) -> dict:
    return {who: reader_role(two_dataset_db, datasets=[ds]) for who, ds in OWN.items()}


def test_psql_shows_each_reader_only_its_dataset(two_readers, two_dataset_db: str) -> None:
    for who, ds in OWN.items():
        other = OWN["bob" if who == "alice" else "alice"]
        mine, theirs = ids_of(two_dataset_db, ds), ids_of(two_dataset_db, other)
        with psycopg.connect(two_readers[who].dsn) as c:
            assert c.execute("select current_user").fetchone()[0] == two_readers[who].name
            assert {r[0] for r in c.execute("select id from cbir.image")} == mine
            assert [r[0] for r in c.execute("select key from cbir.dataset")] == [ds]
            assert {r[0] for r in c.execute("select distinct image_id from cbir.image_label")} <= mine
            # the search functions run as the reader: neighbours only from its own dataset
            q = min(mine)
            hits = c.execute("select image_id from cbir.similar_images(%s, %s, 30)", (q, MODEL)).fetchall()
            assert len(hits) == 30 and {h[0] for h in hits} <= mine
            # the other dataset's image does not exist for this reader; the dataset filter is unknown
            with pytest.raises(psycopg.errors.NoDataFound, match="does not exist"):
                c.execute("select * from cbir.similar_images(%s, %s, 5)", (min(theirs), MODEL))
            c.rollback()
            with pytest.raises(psycopg.errors.InvalidParameterValue, match="unknown dataset"):
                c.execute("select * from cbir.similar_images(%s, %s, 5, null, %s)", (q, MODEL, other))
            c.rollback()
            # the embedding table shows the vectors of this reader's images only
            seen = {r[0] for r in c.execute(f"select image_id from cbir.embedding_{MODEL}")}
            assert seen and seen <= mine
            assert c.execute(
                f"select count(*) from cbir.embedding_{MODEL} where image_id = any(%s)", (sorted(theirs),)
            ).fetchone() == (0,)
            # a vector of the other dataset (the owner's copy) finds only this reader's images too
            with psycopg.connect(two_dataset_db) as owner:
                vec = owner.execute(
                    f"select embedding from cbir.embedding_{MODEL} where image_id = %s", (min(theirs),)
                ).fetchone()[0]
            near = c.execute(
                "select image_id from cbir.similar_to_vector(%s, %s, 10)", (vec, MODEL)
            ).fetchall()
            assert len(near) == 10 and {h[0] for h in near} <= mine
            # the path of an image: only cbir-pg serve's own role may ask
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                c.execute("select cbir.image_file(%s)", (q,))


def test_a_readers_search_is_driven_by_the_hnsw_index(two_readers, two_dataset_db: str) -> None:
    """Row-level security must not change the plan's shape: the HNSW scan drives, and each row it returns
    looks its image up (and the vector policy checks it) by key. A plain join was planned, for a reader, as
    a scan of every visible image and a sort of every vector, whatever the index (this transaction's own
    table statistics). On a table this small, PostgreSQL may read the image rows by a sequential scan per
    probe (cheaper than the index at two pages), so only the vectors' reads are checked."""
    from cbir_pg.db.database import Database
    from cbir_pg.index import build_index

    build_index(Database(two_dataset_db), MODEL, recall_queries=0, progress=False)
    mine = ids_of(two_dataset_db, OWN["alice"])
    with psycopg.connect(two_readers["alice"].dsn) as c:
        q = min(mine)
        hits = c.execute("select image_id from cbir.similar_images(%s, %s, 10)", (q, MODEL)).fetchall()
        assert len(hits) == 10 and {h[0] for h in hits} <= mine
        seq, fetched = c.execute(
            "select seq_tup_read, idx_tup_fetch from pg_stat_xact_user_tables"
            " where schemaname = 'cbir' and relname = %s",
            (f"embedding_{MODEL}",),
        ).fetchone()
    assert seq == 0, (seq, fetched)  # no vector read outside the index scan
    assert 0 < fetched < len(mine), (seq, fetched)


def test_the_owners_notebook_reads_every_vector(two_dataset_db: str) -> None:
    """The façade's read-only ``sql()`` runs as cbir_analyst, which row-level security on the embedding
    tables lets see every row, as the owner does (its policy is made with the table's others)."""
    import cbir_pg

    with psycopg.connect(two_dataset_db) as c:
        total = c.execute(f"select count(*) from cbir.embedding_{MODEL}").fetchone()[0]
    assert total > 0
    frame = cbir_pg.connect(two_dataset_db).sql(f"select count(*) as n from cbir.embedding_{MODEL}")
    assert int(frame["n"][0]) == total


def test_a_reader_without_grants_sees_nothing(reader_role, two_dataset_db: str) -> None:
    carol = reader_role(two_dataset_db)
    with psycopg.connect(carol.dsn) as c:
        assert c.execute("select count(*) from cbir.image").fetchone()[0] == 0
        assert c.execute("select count(*) from cbir.dataset").fetchone()[0] == 0


def test_api_and_page_show_each_reader_only_its_dataset(two_readers, serve_app, two_dataset_db: str) -> None:
    app = serve_app(two_dataset_db)
    for who, ds in OWN.items():
        other = OWN["bob" if who == "alice" else "alice"]
        mine, theirs = ids_of(two_dataset_db, ds), ids_of(two_dataset_db, other)
        with http_client(app) as client:
            login(client, two_readers[who])
            models = client.get("/api/models").json()["models"]
            assert models == [
                {"model": MODEL, "family": models[0]["family"], "dim": models[0]["dim"], "vectors": len(mine)}
            ]
            q = min(mine)
            body = client.get(f"/api/images/{q}/similar", params={"model": MODEL, "k": 50}).json()
            assert len(body["neighbours"]) == 50 and {h["image_id"] for h in body["neighbours"]} <= mine
            assert {h["dataset"] for h in body["neighbours"]} == {ds}
            for path in ("", "/thumbnail", "/pixels", "/similar"):
                r = client.get(f"/api/images/{min(theirs)}{path}", params={"model": MODEL})
                assert r.status_code == 404 and "does not exist" in r.json()["error"], (path, r.text)
            assert client.get(f"/api/images/{q}/thumbnail").status_code == 200
            assert client.get(f"/api/images/{q}/pixels").status_code == 200
            r = client.get(f"/api/images/{q}/similar", params={"model": MODEL, "dataset": other})
            assert r.status_code == 400 and "unknown dataset" in r.json()["error"]
            # the pages
            page = client.get("/", params={"image_id": q, "model": MODEL, "k": 20})
            assert page.status_code == 200 and other not in page.text and ds in page.text
            assert client.get(f"/images/{min(theirs)}").status_code == 404
            image_page = client.get(f"/images/{q}")
            assert image_page.status_code == 200 and other not in image_page.text
            assert client.get("/", params={"image_id": min(theirs), "model": MODEL}).status_code == 404


def test_the_owner_link_sees_every_dataset(two_readers, serve_app, two_dataset_db: str) -> None:
    app = serve_app(two_dataset_db)
    everything = ids_of(two_dataset_db, "breastmnist") | ids_of(two_dataset_db, "pneumoniamnist")
    with http_client(app) as client:
        login_owner(client, app)
        assert client.get("/api/models").json()["models"][0]["vectors"] == len(everything)
        page = client.get("/")
        assert "breastmnist" in page.text and "pneumoniamnist" in page.text


def test_upload_of_another_datasets_image_reveals_nothing(
    two_readers, serve_app, two_dataset_db: str
) -> None:
    app = serve_app(two_dataset_db)
    alice_ids, bob_ids = ids_of(two_dataset_db, "breastmnist"), ids_of(two_dataset_db, "pneumoniamnist")
    theirs = stored_png(two_dataset_db, min(bob_ids))
    mine = stored_png(two_dataset_db, min(alice_ids))
    with http_client(app) as client:
        login(client, two_readers["alice"])
        r = client.post("/api/search", files={"file": ("x.png", theirs, "image/png")}, data={"model": MODEL})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["query"]["stored"] is False and body["query"]["image_id"] is None
        assert {h["image_id"] for h in body["neighbours"]} <= alice_ids
        # her own image is recognised as stored
        r = client.post("/api/search", files={"file": ("y.png", mine, "image/png")}, data={"model": MODEL})
        assert r.json()["query"] == {
            "image_id": min(alice_ids),
            "stored": True,
            "label": r.json()["query"]["label"],
            "embedded_on_the_fly": False,
        }


def test_revoking_a_grant_takes_effect_on_the_next_request(
    two_readers, serve_app, two_dataset_db: str
) -> None:
    from cbir_pg.db.roles import grant_dataset, revoke_dataset

    app = serve_app(two_dataset_db)
    q = min(ids_of(two_dataset_db, "breastmnist"))
    with http_client(app) as client:
        login(client, two_readers["alice"])
        assert client.get(f"/api/images/{q}").status_code == 200
        with psycopg.connect(two_dataset_db, autocommit=True) as c:
            assert revoke_dataset(c, two_readers["alice"].name, "breastmnist")
        assert client.get(f"/api/images/{q}").status_code == 404
        # granted to every reader through the group role
        with psycopg.connect(two_dataset_db, autocommit=True) as c:
            assert grant_dataset(c, "cbir_reader", "breastmnist")
        assert client.get(f"/api/images/{q}").status_code == 200


def test_in_a_browser_each_reader_sees_only_its_dataset(
    two_readers, two_dataset_db: str, tmp_path: Path
) -> None:
    """`cbir-pg serve` as a subprocess and Debian's Chromium: alice and bob log in through the form, each
    sees only its dataset in the search form and the grid, then logs out."""
    from servehelp import CHROMIUM, browser_login, read_login_link, start_serve, stop_serve

    if CHROMIUM is None:
        pytest.skip("no Chromium installed (apt-get install chromium): the browser tests need one")
    from playwright.sync_api import sync_playwright

    log = tmp_path / "serve.log"
    proc, base = start_serve(two_dataset_db, log)
    try:
        read_login_link(log)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox"])
            for who, ds in OWN.items():
                other = OWN["bob" if who == "alice" else "alice"]
                page = browser.new_page()
                page.set_default_timeout(120_000)
                page.goto(base + "/")
                assert page.url.startswith(base + "/login")
                browser_login(page, base, two_readers[who])
                assert page.inner_text("#who") == two_readers[who].name
                assert page.eval_on_selector_all("#dataset option", "os => os.map(o => o.value)") == ["", ds]
                q = min(ids_of(two_dataset_db, ds))
                page.goto(f"{base}/?image_id={q}&model={MODEL}&k=20")
                texts = page.eval_on_selector_all("#grid figure.card", "els => els.map(e => e.innerText)")
                assert len(texts) == 20 and all(other not in t for t in texts)
                assert sum(ds in t for t in texts) == 20
                page.screenshot(path=str(tmp_path / f"{who}.png"), full_page=True)
                page.click("#logout")
                page.wait_for_url(base + "/login")
                page.goto(base + "/api/models")
                assert "log in first" in page.content()
                page.close()
            browser.close()
    finally:
        stop_serve(proc)
    assert "Traceback" not in log.read_text()


def test_a_pooled_connection_keeps_no_readers_role(two_readers, serve_app, two_dataset_db: str) -> None:
    """A search runs as its reader in one round trip (the role, the statement and the rollback sent
    together): whether it succeeds or fails, the connection goes back to the pool as the server's own
    role, and the next request on it (the same one: the pool hands back the last returned first) sees
    what its own actor may see, not the reader's rows."""
    from cbir_pg.app.serve.auth import Actor
    from cbir_pg.cohort import Cohort
    from cbir_pg.errors import ConfigError

    store = serve_app(two_dataset_db).state.store
    alice = Actor(two_readers["alice"].name, "password", two_readers["alice"].name)
    mine = ids_of(two_dataset_db, OWN["alice"])
    everything = mine | ids_of(two_dataset_db, OWN["bob"])
    count = "select current_user::text as who, count(*) as n from cbir.image"
    for fails in (False, True):
        cohort = Cohort(dataset=OWN["bob"]) if fails else Cohort()
        if fails:  # the other dataset is unknown to alice: her statement fails inside the pipeline
            with pytest.raises(ConfigError, match="unknown dataset"):
                store.search_by_id(alice, min(mine), MODEL, 5, cohort)
        else:
            _, hits = store.search_by_id(alice, min(mine), MODEL, 5, cohort)
            assert len(hits) == 5 and {h["image_id"] for h in hits} <= mine
        assert store.fetch(None, count) == [{"who": "cbir_web", "n": len(everything)}]
        assert store.fetch(alice, count) == [{"who": alice.name, "n": len(mine)}]


def test_a_pooled_connection_the_server_closed_is_replaced(serve_app, two_dataset_db: str) -> None:
    """The pool hands out no connection the server has closed (a restart, an administrator's
    pg_terminate_backend), and finds out without a round trip: the idle connection's socket is readable."""
    import time

    from cbir_pg.app.serve.store import _alive

    store = serve_app(two_dataset_db).state.store
    first = store.fetch(None, "select pg_backend_pid() as pid")[0]["pid"]
    (pooled,) = [c for c in list(store._idle.queue) if c.info.backend_pid == first]
    assert _alive(pooled)
    with psycopg.connect(two_dataset_db, autocommit=True) as admin:
        assert admin.execute("select pg_terminate_backend(%s)", (first,)).fetchone()[0]
    deadline = time.monotonic() + 10
    while _alive(pooled) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(pooled)
    again = store.fetch(None, "select pg_backend_pid() as pid, count(*) as n from cbir.image")[0]
    assert again["pid"] != first and again["n"] > 0
