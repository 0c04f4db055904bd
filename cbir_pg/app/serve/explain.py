"""``GET /api/images/{id}/explain``: the similarity maps of a query and a neighbour (:mod:`cbir_pg.explain`)
as a PNG overlay, or the raw maps as JSON or NPY.

One encoder per model is built on first use (from the stored config, like an upload's on-the-fly
embedding) and kept; maps are computed one at a time (two cores are not shared between forward passes)
and cached on disk by pixel hashes, config hash, method and parameters, so a second view is a file read.
The latest faithfulness measurement of the model and method (``cbir-pg eval explain``) comes with the
JSON, and a method that did no better than a random order is flagged in a response header.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from cbir_pg.app.serve.auth import Actor
from cbir_pg.app.serve.params import MAX_ID, CurrentActor, ImageId
from cbir_pg.db import queries
from cbir_pg.errors import ConfigError, NotFoundError

FORMATS = ("png", "json", "npy")
SIDES = ("pair", "query", "neighbour")


class Explainer:
    """Encoders kept per model, the map cache, and one lock around the computation."""

    def __init__(self, store, cache_root: Path):
        from cbir_pg.explain import MapCache

        self.store = store
        self.cache = MapCache(cache_root)
        self._encoders: dict[str, Any] = {}
        self._lock = threading.Lock()

    def encoder(self, model: str):
        from cbir_pg.search import stored_encoder

        if model not in self._encoders:
            with self.store.conn(None) as c:
                self._encoders[model] = stored_encoder(c, model)
        return self._encoders[model]

    def rgb(self, actor: Actor | None, image_id: int):
        from cbir_pg.images import DecodeError, decode_file

        path, _ = self.store.image_file(actor, image_id)
        try:
            return decode_file(path)
        except (DecodeError, OSError):
            raise NotFoundError(f"image {image_id} cannot be read") from None

    def explain(self, actor: Actor | None, query_id: int, neighbour_id: int, model: str, method: str):
        """The pair's maps; the pixels are read as ``actor`` (an image they may not see is not found)."""
        from cbir_pg.explain import METHODS, Explained, explain_pair, model_view

        METHODS.get(method)
        q, n = self.rgb(actor, query_id), self.rgb(actor, neighbour_id)
        with self._lock:
            enc = self.encoder(model)
            maps = explain_pair(enc, q, n, method, cache=self.cache)
        return Explained(maps, model_view(enc, q), model_view(enc, n))

    def faithfulness(self, actor: Actor | None, model: str, method: str) -> dict[str, Any] | None:
        with self.store.conn(actor) as c:
            row = c.execute(
                queries.get("explain", "latest_faithfulness"), {"model": model, "method": method}
            ).fetchone()
        return dict(row) if row else None

    def verdicts(self, actor: Actor | None, model: str) -> dict[str, dict[str, Any]]:
        """The latest faithfulness row of each method of ``model`` (for the page's labels)."""
        with self.store.conn(actor) as c:
            rows = c.execute(queries.get("explain", "latest_faithfulness_all"), {"model": model}).fetchall()
        return {r["method"]: dict(r) for r in rows}


@dataclass(frozen=True)
class ExplainRequest:
    """The query parameters of ``/api/images/{id}/explain``, each checked."""

    neighbour: int
    method: str
    fmt: str
    side: str
    model: str | None

    @classmethod
    def from_params(cls, p) -> ExplainRequest:
        from cbir_pg.explain import list_methods

        raw = (p.get("neighbour") or "").strip()
        if not raw.isdigit() or not 1 <= int(raw) <= MAX_ID:
            raise ConfigError("neighbour must be a positive image id")
        method = (p.get("method") or "occlusion").strip()
        if method not in list_methods():
            raise ConfigError(f"unknown method {method[:40]!r}: use {', '.join(list_methods())}")
        fmt = (p.get("format") or "png").strip()
        if fmt not in FORMATS:
            raise ConfigError(f"unknown format {fmt[:20]!r}: use png, json or npy")
        side = (p.get("side") or "pair").strip()
        if side not in SIDES:
            raise ConfigError(f"unknown side {side[:20]!r}: use pair, query or neighbour")
        return cls(int(raw), method, fmt, side, (p.get("model") or "").strip() or None)


def explain_response(explainer: Explainer, image_id: int, ask: ExplainRequest, model: str, actor) -> Response:
    """The maps in the asked format, with headers saying whether they were cached and faithful."""
    out = explainer.explain(actor, image_id, ask.neighbour, model, ask.method)
    faith = explainer.faithfulness(actor, model, ask.method)
    headers = {
        "X-Explain-Cached": "true" if out.maps.cached else "false",
        "X-Explain-Seconds": f"{out.maps.seconds:.3f}",
        "Cache-Control": "private, max-age=86400",
    }
    if faith is not None:
        headers["X-Explain-Faithful"] = "false" if faith["no_better_than_random"] else "true"
    if ask.fmt == "json":
        body = {"query": image_id, "neighbour": ask.neighbour, **out.maps.as_json(), "faithfulness": faith}
        return JSONResponse(body, headers=headers)
    if ask.fmt == "npy":
        return Response(out.maps.npy(), media_type="application/octet-stream", headers=headers)
    png = out.png() if ask.side == "pair" else out.side_png(ask.side)
    return Response(png, media_type="image/png", headers=headers)


def add_explain_routes(app: FastAPI, store, cache_root: Path, *, audit) -> Explainer:
    """The route; ``audit`` is the app's :func:`cbir_pg.app.serve.web.audit` (handed in: no import cycle)."""
    explainer = Explainer(store, cache_root)

    @app.get(
        "/api/images/{image_id}/explain",
        tags=["api"],
        summary="similarity maps of this image and a neighbour (PNG overlay, or raw maps as JSON/NPY)",
        description="Query parameters: neighbour (image id, required), model, method (occlusion, rise, "
        "gradients), format (png, json, npy), side (pair, query, neighbour; png only).",
    )
    def api_explain(request: Request, image_id: ImageId, actor: CurrentActor) -> Response:
        ask = ExplainRequest.from_params(request.query_params)
        audit(request, "explain", [image_id, ask.neighbour], {"method": ask.method})
        model = store.model_or_default(actor, ask.model)
        audit(request, "explain", [image_id, ask.neighbour], {"method": ask.method, "model": model})
        store.check_model(actor, model)
        store.image(actor, image_id)
        store.image(actor, ask.neighbour)
        return explain_response(explainer, image_id, ask, model, actor)

    return explainer
