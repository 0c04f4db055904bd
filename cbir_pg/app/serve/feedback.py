"""Judgements and refinement on the page: ``POST /api/judgements`` records the acting user's verdict on
a neighbour (:mod:`cbir_pg.feedback`, row-level security in ``cbir.judgement``), ``GET
/api/images/{id}/judgements`` lists theirs for one query, and ``GET /api/images/{id}/refined`` is the
Rocchio ranking with how each case moved (the search page's "Refine" shows the same).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request

from cbir_pg.app.serve.auth import Actor
from cbir_pg.app.serve.params import CurrentActor, ImageId
from cbir_pg.errors import ConfigError


def _int(v: Any, name: str) -> int | None:
    if v is None or v == "":
        return None
    if isinstance(v, bool) or not isinstance(v, int | str) or not str(v).isdigit():
        raise ConfigError(f"{name.replace('_', ' ')} must be a positive integer")
    return int(v)


def judgement_from(body: Any):
    """A :class:`cbir_pg.feedback.Judgement` from a JSON object, or a one-line error."""
    from cbir_pg.feedback import Judgement

    if not isinstance(body, dict):
        raise ConfigError("send a JSON object: query_image_id, neighbour_id, model, verdict, reason")
    reason = body.get("reason")
    if reason is not None and not isinstance(reason, str):
        raise ConfigError("reason must be text")
    model = body.get("model")
    if not isinstance(model, str):
        raise ConfigError("model must be a model key")
    return Judgement(
        neighbour_id=_int(body.get("neighbour_id"), "neighbour_id") or 0,
        model=model,
        verdict=str(body.get("verdict") or ""),
        query_image_id=_int(body.get("query_image_id"), "query_image_id"),
        query_hash=body.get("query_hash") if isinstance(body.get("query_hash"), str) else None,
        reason=reason,
    )


def refined(
    store, actor: Actor | None, image_id: int, model: str, k: int, cohort
) -> tuple[list[dict], list[dict], int]:
    """``(refined hits, moves, number of judgements used)``: the Rocchio ranking among the cohort
    (``cbir.similar_images_rocchio_v2``) in the page's hit shape, and each case's rank before and after."""
    from cbir_pg.app.serve.store import page_hit
    from cbir_pg.db import queries
    from cbir_pg.feedback import moves, my_judgements

    before = store.similar(actor, image_id, model, k, cohort)
    with store.conn(actor) as c:
        rows = c.execute(
            queries.get("feedback", "similar_images_rocchio_v2"),
            {"image_id": image_id, "model": model, "k": k, "cohort": cohort.sql()},
        ).fetchall()
        n_judged = len(my_judgements(c, query_image_id=image_id))
    hits = [page_hit(r) for r in rows]
    moved = [
        {"image_id": m.image_id, "before": m.before, "after": m.after, "change": m.change}
        for m in moves([h["image_id"] for h in before], [h["image_id"] for h in hits])
    ]
    return hits, moved, n_judged


async def _json_body(request: Request) -> Any:
    try:
        return await request.json()
    except ValueError:
        raise ConfigError("send the judgement as a JSON object") from None


async def judge(request: Request, store, actor: Actor, audit) -> dict:
    """``POST /api/judgements``: check the model and both images are the actor's to see, then record
    the verdict (one audit row: the query and neighbour ids, model and verdict; never the reason)."""
    from starlette.concurrency import run_in_threadpool

    from cbir_pg.feedback import record

    body = await _json_body(request)
    audit(request, "judgement")
    j = judgement_from(body)
    audit(request, "judgement", [j.query_image_id, j.neighbour_id], {"model": j.model, "verdict": j.verdict})
    await run_in_threadpool(store.check_model, actor, j.model)
    if j.query_image_id is not None:
        await run_in_threadpool(store.image, actor, j.query_image_id)
    await run_in_threadpool(store.image, actor, j.neighbour_id)

    def write() -> dict:
        with store.conn(actor) as c:
            row = record(c, j)
            c.commit()
        return row

    row = await run_in_threadpool(write)
    return {key: row[key] for key in ("id", "query_image_id", "neighbour_id", "model", "verdict", "reason")}


def refine(request: Request, store, actor: Actor, image_id: int, *, parse_filters, parse_k, audit) -> dict:
    """``GET /api/images/{id}/refined``: the Rocchio ranking among the cohort of the query parameters."""
    audit(request, "refine", [image_id])
    p = request.query_params
    f, k = parse_filters(p), parse_k(p)
    model = store.model_or_default(actor, p.get("model"))
    store.check_model(actor, model)
    store.check_filters(actor, f)
    store.image(actor, image_id)
    hits, moved, n = refined(store, actor, image_id, model, k, f)
    audit(
        request,
        "refine",
        [image_id, *(h["image_id"] for h in hits)],
        {"model": model, "k": k, **f.as_params()},
    )
    return {"query": image_id, "model": model, "k": k, "judgements": n, "neighbours": hits, "moves": moved}


def add_feedback_routes(app: FastAPI, store, *, parse_filters, parse_k, audit) -> None:
    """The judgement and refinement routes; the page's request parsers and its audit note are handed
    in by :func:`cbir_pg.app.serve.web.create_app` (this module does not import it)."""

    @app.post("/api/judgements", tags=["api"], summary="record your verdict on a neighbour (relevant or not)")
    async def api_judge(request: Request, actor: CurrentActor) -> dict:
        return await judge(request, store, actor, audit)

    @app.get(
        "/api/images/{image_id}/judgements",
        tags=["api"],
        summary="your judgements of this query's neighbours",
    )
    def api_my_judgements(request: Request, image_id: ImageId, actor: CurrentActor) -> dict:
        from cbir_pg.feedback import my_judgements

        audit(request, "judgements", [image_id])
        store.image(actor, image_id)
        with store.conn(actor) as c:
            rows = my_judgements(c, query_image_id=image_id)
        return {
            "query_image_id": image_id,
            "judgements": [{k: r[k] for k in ("neighbour_id", "model", "verdict", "reason")} for r in rows],
        }

    @app.get(
        "/api/images/{image_id}/refined",
        tags=["api"],
        summary="the ranking after Rocchio with your judgements, and how each case moved",
    )
    def api_refined(request: Request, image_id: ImageId, actor: CurrentActor) -> dict:
        return refine(
            request, store, actor, image_id, parse_filters=parse_filters, parse_k=parse_k, audit=audit
        )


def method_options(app_state, actor: Actor | None, model: str) -> list[dict[str, Any]]:
    """The similarity-map methods for the page's picker, each with its faithfulness verdict."""
    from cbir_pg.explain import list_methods

    verdicts = app_state.explainer.verdicts(actor, model) if model else {}
    return [
        {
            "name": m,
            "measured": m in verdicts,
            "no_better": bool(verdicts.get(m, {}).get("no_better_than_random")),
        }
        for m in list_methods()
    ]


def page_context(
    request: Request,
    store,
    actor: Actor | None,
    image_id: int,
    model: str,
    k: int,
    filters,
    hits: list,
    with_frames,
) -> dict:
    """What the search page adds for a stored query: the overlay methods, the Refine link and, with
    ``refine=1``, the refined hits and how each case moved."""
    from urllib.parse import urlencode

    params = {"image_id": image_id, "model": model, "k": k, **filters.as_params(), "refine": 1}
    ctx: dict[str, Any] = {
        "explain_methods": method_options(request.app.state, actor, model),
        "refine_href": "/?" + urlencode({key: ("true" if v is True else v) for key, v in params.items()}),
        "refined": None,
        "moves": [],
        "hits": hits,
    }
    if (request.query_params.get("refine") or "") in ("1", "true"):
        new_hits, moved, n = refined(store, actor, image_id, model, k, filters)
        label = store.image(actor, image_id)["label"]
        ctx.update(hits=with_frames(new_hits, label), refined=n, moves=moved)
    return ctx
