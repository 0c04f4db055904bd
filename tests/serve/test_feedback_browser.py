"""End to end in Chromium (Debian's, driven by Playwright): log in as a reader, open a query's
neighbours, show why they match (the overlay), judge three neighbours, refine, see the ranking change;
the judgements are then the reader's rows, in the de-identified BI view and in
``eval retrieval --relevance judgements``."""

from __future__ import annotations

import sys
from pathlib import Path

import psycopg
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "db"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from explain_seed import build_seeded_template  # noqa: E402
from servehelp import CHROMIUM, FLAGS, browser_login, start_serve, stop_serve, wait_true, wait_up  # noqa: E402

pytestmark = [pytest.mark.real_data, pytest.mark.slow]
MODEL = "tiny_cnn"


@pytest.fixture(scope="module")
def seeded(pg_server_dsn: str, template_db: str, medmnist_dir: Path):
    from conftest import _dsn_for, drop_database

    name = build_seeded_template(pg_server_dsn, template_db, medmnist_dir)
    yield _dsn_for(pg_server_dsn, name)
    drop_database(pg_server_dsn, name)


@pytest.fixture(scope="module")
def server(seeded: str, tmp_path_factory):
    if CHROMIUM is None:
        pytest.skip("no Chromium installed (apt-get install chromium): the browser tests need one")
    home = tmp_path_factory.mktemp("home")
    log = home / "serve.log"
    proc, base = start_serve(seeded, log, home=home)
    wait_up(proc, base, log)
    yield base
    stop_serve(proc)
    assert "Traceback" not in log.read_text()


def card_ids(page) -> list[int]:
    return page.eval_on_selector_all("#grid figure.card", "els => els.map(e => +e.dataset.imageId)")


def _judge_three(page) -> None:
    """Judge three neighbours: the 6th and 9th relevant (the 6th with a reason), the 1st not."""
    cards = page.locator("#grid figure.card")
    cards.nth(5).locator(".reason").fill("same opacity pattern")
    cards.nth(5).locator(".judge-relevant").click()
    cards.nth(8).locator(".judge-relevant").click()
    cards.nth(0).locator(".judge-not_relevant").click()
    wait_true(
        page,
        "document.querySelectorAll('#grid figure.judged-relevant, #grid figure.judged-not').length == 3",
    )


def _refine(page, before: list[int], shots: Path) -> None:
    """Refine: the ranking changes, the moved cases are listed and badged."""
    page.click("#refine")
    page.wait_for_selector("#moves")
    after = card_ids(page)
    assert after != before
    # Rocchio moves the query toward the mean of the relevant pair: together they rise, the
    # not-relevant case (rank 1 before) sinks or leaves the list
    rank = {i: r for r, i in enumerate(after)}
    assert rank.get(before[5], 99) + rank.get(before[8], 99) < 5 + 8
    assert rank.get(before[0], 99) > 0
    assert "judgement" in page.inner_text("#refined")
    wait_true(page, "document.querySelectorAll('#grid .moved').length > 0")
    page.screenshot(path=str(shots / "2-refined.png"))
    # the verdicts are still marked after the reload
    wait_true(page, "document.querySelectorAll('#grid figure.judged-relevant').length >= 2")


def _check_judgements_stored(seeded: str, q: int, before: list[int], reader) -> None:
    """The judgements are the reader's rows, in the de-identified BI view and in
    ``eval retrieval --relevance judgements``."""
    from cbir_pg.db.database import Database
    from cbir_pg.eval.retrieval import evaluate_retrieval

    with psycopg.connect(seeded) as c:
        view = c.execute(
            "select neighbour_id, verdict from cbir_report.judgements where query_image_id = %s order by neighbour_id",
            (q,),
        ).fetchall()
        reasons = [r[0] for r in c.execute("select reason from cbir.judgement where reason is not null")]
        judges = {r[0] for r in c.execute("select username from cbir.judgement")}
    assert sorted(view) == sorted(
        [(before[5], "relevant"), (before[8], "relevant"), (before[0], "not_relevant")]
    )
    assert reasons == ["same opacity pattern"] and judges == {reader.name}
    r = evaluate_retrieval(
        Database(seeded), MODEL, ns=(1, 5, 10), mode="exact", progress=False, relevance="judgements"
    )
    assert r.judged.n_judged_queries == 1 and r.judged.n_judged_pairs == 3


def test_judge_refine_and_evaluate_in_chromium(server: str, seeded: str, tmp_path: Path, reader_role) -> None:
    from playwright.sync_api import sync_playwright

    with psycopg.connect(seeded) as c:
        q = c.execute("select id from cbir.image where split = 'test' order by id limit 1").fetchone()[0]
    reader = reader_role(seeded, datasets=("breastmnist", "pneumoniamnist"))
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.set_default_timeout(300_000)
        browser_login(page, server, reader)
        page.goto(f"{server}/?image_id={q}&model={MODEL}&k=10&split=train")
        page.wait_for_selector("#grid")
        before = card_ids(page)
        assert len(before) == 10

        # why do they match: every neighbour's thumbnail becomes its similarity map
        page.check(".feedback-bar .explain-toggle")
        wait_true(
            page,
            "[...document.querySelectorAll('#grid figure.card img')].every("
            "i => i.src.includes('/explain?') && i.complete && i.naturalWidth >= 224)",
        )
        page.screenshot(path=str(tmp_path / "1-overlay.png"))

        _judge_three(page)
        _refine(page, before, tmp_path)
        browser.close()
    _check_judgements_stored(seeded, q, before, reader)
