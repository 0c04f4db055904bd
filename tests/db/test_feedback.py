"""Relevance judgements in PostgreSQL: each user reads and writes only their own rows (row-level
security), a granted reader and the owner read all, BI readers get the de-identified view; Rocchio in
SQL equals the NumPy reference and changes the ranking; ``eval retrieval --relevance judgements`` equals
a plain-loop P@N with the judgements as ground truth; the label agreement view per class."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import psycopg
import pytest
from explain_seed import build_seeded_template

from cbir_pg.db.database import Database
from cbir_pg.feedback import Judgement, moves, record, refine, rocchio_reference

pytestmark = pytest.mark.real_data
MODEL = "tiny_cnn"


@pytest.fixture(scope="module")
def seeded_name(pg_server_dsn: str, template_db: str, medmnist_dir: Path):
    from conftest import drop_database

    name = build_seeded_template(pg_server_dsn, template_db, medmnist_dir)
    yield name
    drop_database(pg_server_dsn, name)


@pytest.fixture
def fdb(seeded_name: str, clone_db) -> str:
    return clone_db(seeded_name)


@pytest.fixture
def users(fdb: str, reader_role, pg_server_dsn: str):
    """Four real reader logins made as `cbir-pg db roles add NAME --reader` makes them, with both datasets
    granted (the page's users, who act under their own role): alice, bob, carol (also a member of
    cbir_judgement_reader) and a BI reader; dropped after the test."""
    names = {}
    for who in ("alice", "bob", "carol", "bi"):
        names[who] = reader_role(fdb, datasets=("breastmnist", "pneumoniamnist")).name
    with psycopg.connect(pg_server_dsn, autocommit=True) as c:
        c.execute(f'grant cbir_judgement_reader to "{names["carol"]}"')
    return names


def as_role(dsn: str, role: str) -> psycopg.Connection:
    """The owner's connection acting as ``role`` (what `cbir-pg serve` does with `set local role`)."""
    c = psycopg.connect(dsn)
    c.execute(f'set role "{role}"')
    return c


def some_query(dsn: str) -> tuple[int, list[int]]:
    with psycopg.connect(dsn) as c:
        q = c.execute("select id from cbir.image where split = 'test' order by id limit 1").fetchone()[0]
        ns = [r[0] for r in c.execute("select image_id from cbir.similar_images(%s, %s, 10)", (q, MODEL))]
    return q, ns


def test_each_user_sees_only_their_own_judgements(fdb: str, users: dict[str, str]):
    q, ns = some_query(fdb)
    for who, verdict, reason in [
        ("alice", "relevant", "same lesion margin"),
        ("bob", "not_relevant", "bob's secret"),
    ]:
        with as_role(fdb, users[who]) as c:
            row = record(c, Judgement(ns[0], MODEL, verdict, query_image_id=q, reason=reason))
            assert row["username"] == users[who]  # the column defaults to current_user
    with as_role(fdb, users["alice"]) as c:
        # judging again replaces the verdict: still one row
        record(c, Judgement(ns[0], MODEL, "not_relevant", query_image_id=q, reason="changed my mind"))
        c.commit()
        rows = c.execute("select username, verdict, reason from cbir.judgement").fetchall()
        assert rows == [(users["alice"], "not_relevant", "changed my mind")]
        assert (
            c.execute("select count(*) from cbir.judgement where reason like '%secret%'").fetchone()[0] == 0
        )
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
            c.execute(
                "insert into cbir.judgement (username, query_image_id, neighbour_id, model, verdict)"
                " values (%s, %s, %s, %s, 'relevant')",
                (users["bob"], q, ns[1], MODEL),
            )
    with as_role(fdb, users["alice"]) as c:
        assert (
            c.execute(
                "update cbir.judgement set verdict = 'relevant' where username = %s", (users["bob"],)
            ).rowcount
            == 0
        )
    with as_role(fdb, users["carol"]) as c:  # granted: reads every row, reasons included
        assert sorted(r[0] for r in c.execute("select reason from cbir.judgement")) == [
            "bob's secret",
            "changed my mind",
        ]
    with psycopg.connect(fdb) as c:  # the owner reads all
        assert c.execute("select count(*) from cbir.judgement").fetchone()[0] == 2
    with as_role(fdb, users["bi"]) as c:  # a BI reader: none of the table's rows, all of the view's
        assert c.execute("select count(*) from cbir.judgement").fetchone()[0] == 0
        cur = c.execute("select * from cbir_report.judgements")
        cols = [d.name for d in cur.description]
        assert len(cur.fetchall()) == 2
        assert "username" not in cols and "reason" not in cols
        assert {"verdict", "query_label", "neighbour_label", "agrees_with_labels"} <= set(cols)


def test_rocchio_in_sql_equals_numpy_and_changes_the_ranking(fdb: str, users: dict[str, str]):
    q, before = some_query(fdb)
    relevant, not_relevant = [before[5], before[8]], [before[0]]
    with as_role(fdb, users["alice"]) as c:
        for n in relevant:
            record(c, Judgement(n, MODEL, "relevant", query_image_id=q))
        for n in not_relevant:
            record(c, Judgement(n, MODEL, "not_relevant", query_image_id=q))
        c.commit()
        after = refine(c, q, MODEL, k=10)
        own = c.execute("select relevant, not_relevant from cbir.judged_neighbours(%s)", (q,)).fetchone()
        assert sorted(own[0]) == sorted(relevant) and own[1] == not_relevant
    with as_role(fdb, users["bob"]) as c:  # bob judged nothing: his refinement is the plain search
        assert [r["image_id"] for r in refine(c, q, MODEL, k=10)] == before
    with psycopg.connect(fdb) as c:
        rows = c.execute(f"select image_id, embedding::real[] from cbir.embedding_{MODEL}").fetchall()
    ids = np.array([r[0] for r in rows])
    vecs = np.array([r[1] for r in rows], np.float64)
    by_id = dict(zip(ids.tolist(), vecs, strict=True))
    ref = rocchio_reference(
        by_id[q], np.array([by_id[i] for i in relevant]), np.array([by_id[i] for i in not_relevant])
    )
    unit = vecs / np.linalg.norm(vecs, axis=1, keepdims=True)
    sims = unit @ (ref / np.linalg.norm(ref))
    order = [i for i in sorted(range(len(ids)), key=lambda j: (-sims[j], ids[j])) if ids[i] != q][:10]
    assert [r["image_id"] for r in after] == ids[order].tolist()
    assert [r["similarity"] for r in after] == pytest.approx(sims[order].tolist(), abs=1e-5)
    assert [r["image_id"] for r in after] != before
    moved = {m.image_id: m for m in moves(before, [r["image_id"] for r in after])}
    assert moved[not_relevant[0]].change in ("down", "dropped")
    assert sum(moved[i].after or 99 for i in relevant) < sum(moved[i].before for i in relevant)


def test_eval_with_judgements_equals_loops_and_agreement_view(fdb: str):
    from cbir_pg.eval.retrieval import evaluate_retrieval

    db = Database(fdb)
    base = evaluate_retrieval(db, MODEL, ns=(1, 3, 5), mode="exact", progress=False)
    t = base.primary.topn
    # the owner judges the top 3 of two queries: the opposite of the label rule for the first two
    judged: dict[tuple[int, int], bool] = {}
    with psycopg.connect(fdb) as c:
        for i in (0, 1):
            for j in range(3):
                q, n = int(t.query_ids[i]), int(t.neighbour_ids[i, j])
                verdict = (not bool(t.relevant[i, j])) if j < 2 else bool(t.relevant[i, j])
                judged[(q, n)] = verdict
                c.execute(
                    "insert into cbir.judgement (query_image_id, neighbour_id, model, verdict) values (%s, %s, %s, %s)",
                    (q, n, MODEL, "relevant" if verdict else "not_relevant"),
                )
    r = evaluate_retrieval(db, MODEL, ns=(1, 3, 5), mode="exact", progress=False, relevance="judgements")
    j = r.judged
    assert j.n_judged_queries == 2 and j.n_judged_pairs == 6 and j.n_disagreements == 4
    sizes = base.primary.topn.class_sizes_for(t.query_labels) - t.query_in_index.astype(int)
    for k, n in enumerate((1, 3, 5)):
        per = []
        for i, q in enumerate(t.query_ids):
            n_eff = min(n, max(int(sizes[i]), 0))
            if n_eff == 0:
                continue
            hits = sum(
                judged.get((int(q), int(t.neighbour_ids[i, x])), bool(t.relevant[i, x])) for x in range(n_eff)
            )
            per.append(hits / n_eff)
        assert r.primary.summary.micro[k] == pytest.approx(np.mean(per))
        assert j.label_micro[k] == pytest.approx(base.primary.summary.micro[k])
    with psycopg.connect(fdb) as c:
        model, params = c.execute(
            "select encoder_key, params from cbir.eval_run where id = %s", (r.primary.run_id,)
        ).fetchone()
        assert model == f"{MODEL}[judgements]" and params["n_judged_queries"] == 2
        assert params["relevance"] == "judgements"
        agreement = {
            row[0]: row[1:]
            for row in c.execute("select label, n_judgements, n_agree from cbir_report.judgement_agreement")
        }
        labels = dict(
            c.execute(
                "select i.id, l.key from cbir.image i join cbir.label l on l.id = i.label_id"
            ).fetchall()
        )
    expected: dict[str, list[int]] = {}
    for (q, n), verdict in judged.items():
        e = expected.setdefault(labels[q], [0, 0])
        e[0] += 1
        e[1] += int(verdict == (labels[q] == labels[n]))
    assert {k: list(v) for k, v in agreement.items()} == expected


def _post_judgement(client, body):
    """POST a judgement with the Origin a browser sends."""
    return client.post("/api/judgements", json=body, headers={"Origin": str(client.base_url).rstrip("/")})


def _check_bad_judgements_refused(client, q: int, neighbour: int) -> None:
    """A bad verdict, an unknown image or model, a body that is not an object: 400/404 naming it."""
    for body, words in [
        ({"query_image_id": q, "neighbour_id": neighbour, "model": MODEL, "verdict": "maybe"}, "verdict"),
        ({"query_image_id": q, "neighbour_id": 999999, "model": MODEL, "verdict": "relevant"}, "999999"),
        ({"query_image_id": q, "neighbour_id": neighbour, "model": "nope", "verdict": "relevant"}, "nope"),
        ([1, 2], "JSON object"),
    ]:
        r = _post_judgement(client, body)
        assert r.status_code in (400, 404) and words in r.json()["error"], r.text


def test_api_judge_list_refine_and_page(fdb: str, serve_app, reader_role):
    from servehelp import http_client, login

    q, before = some_query(fdb)
    alice = reader_role(fdb, datasets=("breastmnist", "pneumoniamnist"))
    app = serve_app(fdb)
    with http_client(app) as client:
        assert client.post("/api/judgements", json={}).status_code == 401  # a login first
        login(client, alice)
        for n, verdict in [(before[4], "relevant"), (before[7], "relevant"), (before[0], "not_relevant")]:
            r = _post_judgement(
                client,
                {
                    "query_image_id": q,
                    "neighbour_id": n,
                    "model": MODEL,
                    "verdict": verdict,
                    "reason": "private note",
                },
            )
            assert r.status_code == 200, r.text
            assert r.json()["verdict"] == verdict
        mine = client.get(f"/api/images/{q}/judgements").json()["judgements"]
        assert sorted((j["neighbour_id"], j["verdict"]) for j in mine) == sorted(
            [(before[4], "relevant"), (before[7], "relevant"), (before[0], "not_relevant")]
        )
        refined = client.get(f"/api/images/{q}/refined?model={MODEL}&k=10").json()
        assert refined["judgements"] == 3
        after = [h["image_id"] for h in refined["neighbours"]]
        assert after != before
        moved = {m["image_id"]: m for m in refined["moves"]}
        assert moved[before[4]]["after"] < 5 and moved[before[0]]["change"] in ("down", "dropped")
        page = client.get(f"/?image_id={q}&model={MODEL}&k=10&refine=1")
        assert page.status_code == 200 and 'id="moves"' in page.text and "Refined" in page.text
        plain = client.get(f"/?image_id={q}&model={MODEL}&k=10")
        assert 'id="refine"' in plain.text and 'id="moves"' not in plain.text
        _check_bad_judgements_refused(client, q, before[1])
    with psycopg.connect(fdb) as c:
        users = {r[0] for r in c.execute("select username from cbir.judgement")}
        audit = c.execute(
            "select image_ids, filters from cbir.audit_log where action = 'judgement' and status = 200"
            " order by id"
        ).fetchall()
    assert users == {alice.name}  # the logged-in user's own role wrote them
    assert len(audit) == 3 and audit[0][0] == [q, before[4]]
    assert audit[0][1] == {"model": MODEL, "verdict": "relevant"}  # the reason is never audited


def test_an_uploads_judgements_refine_by_its_pixel_hash(fdb: str, users: dict[str, str]):
    """An upload has no id: its judgements are keyed by its pixel hash, and
    cbir.similar_to_vector_rocchio refines its vector exactly like a stored query with the same verdicts."""
    q, before = some_query(fdb)
    digest = "ab" * 32
    with as_role(fdb, users["alice"]) as c:
        for n, verdict in [(before[3], "relevant"), (before[1], "not_relevant")]:
            record(c, Judgement(n, MODEL, verdict, query_hash=digest))
            record(c, Judgement(n, MODEL, verdict, query_image_id=q))
        c.commit()
        by_hash = c.execute(
            "select image_id, similarity from cbir.similar_to_vector_rocchio("
            " cbir.image_vector(%s, %s), %s, %s, 10, null, null, null, %s)",
            (q, MODEL, digest, MODEL, q),
        ).fetchall()
        by_id = [(r["image_id"], r["similarity"]) for r in refine(c, q, MODEL, k=10)]
        plain = c.execute(
            "select image_id from cbir.similar_to_vector_rocchio(cbir.image_vector(%s, %s), %s, %s, 10,"
            " null, null, null, %s)",
            (q, MODEL, "cd" * 32, MODEL, q),
        ).fetchall()
    assert [i for i, _ in by_hash] == [i for i, _ in by_id] != before
    assert [s for _, s in by_hash] == pytest.approx([s for _, s in by_id], abs=1e-9)
    assert [r[0] for r in plain] == before  # an unjudged upload: the plain search
