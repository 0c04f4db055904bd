"""The ASGI app: server-rendered pages (search, image, results, login) and a JSON API under ``/api/``.

Every route but ``/login`` and the static assets takes the acting person from the one dependency
:func:`~cbir_pg.app.serve.auth.current_actor` and passes it to the store, whose queries then run as that
person. Middleware (:mod:`~cbir_pg.app.serve.guards`, plain ASGI), the same on every request: the Host header must be one of the configured names
(Starlette's ``TrustedHostMiddleware``: DNS rebinding), a state-changing request must come from this
origin (CSRF), the security headers, and one ``cbir.audit_log`` row per audited request.

Every route calls :class:`~cbir_pg.app.serve.store.Store` (the ``cbir_web`` role's reads) and the
project's decode path; errors become one JSON object or one message on the page with the right status
(400 bad input, 404 unknown image or model, 413 too large, 415 not an image), never a traceback.
"""

from __future__ import annotations

import base64
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartParser

from cbir_pg.app.serve.auth import (
    COOKIE,
    Actor,
    AuthConfig,
    Forbidden,
    Gate,
    LoginRefused,
    NotAuthenticated,
    TooManyFailures,
    may,
)
from cbir_pg.app.serve.guards import add_guards
from cbir_pg.app.serve.params import MAX_ID, CurrentActor, ImageId
from cbir_pg.app.serve.store import MAX_K, Store, check_k
from cbir_pg.app.serve.thumbs import FULL_SIDE, THUMB_SIDE, PngCache, render_png
from cbir_pg.app.serve.uploads import Upload, UploadStore
from cbir_pg.cohort import Cohort
from cbir_pg.errors import (
    CbirError,
    ConfigError,
    ConnectionLostError,
    DatabaseError,
    InputError,
    NotFoundError,
    WeightsMissingError,
)
from cbir_pg.rules import SPLITS

log = logging.getLogger("cbir_pg.serve")
HERE = Path(__file__).resolve().parent
#: default cap on an upload's size
DEFAULT_MAX_UPLOAD = 20 * 1024 * 1024


class UploadTooLarge(InputError):
    """An upload over the size cap (HTTP 413)."""


@dataclass
class ServeConfig:
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD
    report_dir: Path | None = None
    cache_dir: Path = field(default_factory=lambda: Path("cache"))
    auth: AuthConfig = field(default_factory=AuthConfig)


def status_of(exc: BaseException) -> int:
    """The HTTP status of a project error."""
    from cbir_pg.images import DecodeError

    if isinstance(exc, UploadTooLarge):
        return 413
    if isinstance(exc, NotAuthenticated | LoginRefused):
        return 429 if isinstance(exc, TooManyFailures) else 401
    if isinstance(exc, Forbidden):
        return 403
    if isinstance(exc, DecodeError):
        return 413 if exc.reason == "decompression_bomb" else 415
    if isinstance(exc, NotFoundError):
        return 404
    if isinstance(exc, ConfigError | InputError):
        return 400
    if isinstance(exc, WeightsMissingError | DatabaseError):
        return 503
    return 500


def public_message(exc: CbirError, where: str) -> str:
    """What a client is told: the error itself below 500; for a server-side problem a line that names
    it (an unreachable database, a refused grant) while the details go to the log."""
    from cbir_pg.app.serve.store import PermissionDenied

    if status_of(exc) < 500 or isinstance(exc, WeightsMissingError | PermissionDenied):
        return str(exc)
    if isinstance(exc, ConnectionLostError):
        log.warning("database unreachable on %s: %s", where, exc)
        return "the database is unavailable"
    log.error("database error on %s: %s", where, exc)
    return "database error: the server log has the details"


# --------------------------------------------------------------------------- request parsing
def _opt(params, name: str) -> str | None:
    v = params.get(name)
    if v is None:
        return None
    v = v.strip()
    return v or None


def _number(params, name: str, kind=float):
    v = _opt(params, name)
    if v is None:
        return None
    try:
        return kind(v)
    except ValueError:
        raise ConfigError(f"{name.replace('_', ' ')} must be a number, got {v[:40]!r}") from None


def parse_filters(params) -> Cohort:
    """The cohort of query or form parameters (empty fields mean "any"); its values are validated by
    the database (``cbir.resolve_cohort``) before the search runs."""
    return Cohort.from_params(params)


def parse_k(params, default: int = 10) -> int:
    k = _number(params, "k", int)
    return check_k(default if k is None else k)


def parse_image_id(params) -> int | None:
    v = _number(params, "image_id", int)
    if v is not None and not 1 <= v <= MAX_ID:
        raise ConfigError(f"image id must be a positive integer, got {v}")
    return v


class _InMemoryParser(MultiPartParser):
    # the whole (capped) body is already in memory: keep the file part there too, never on disk
    spool_max_size = 1 << 40


async def read_upload(request: Request, cap: int) -> tuple[bytes, Any]:
    """The uploaded file's bytes and the other form fields, refusing more than ``cap`` bytes early."""
    slack = 64 * 1024  # the multipart envelope and the small form fields
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > cap + slack:
        raise UploadTooLarge(f"the upload is larger than the {cap // (1024 * 1024)} MiB limit")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > cap + slack:
            raise UploadTooLarge(f"the upload is larger than the {cap // (1024 * 1024)} MiB limit")
    ctype = request.headers.get("content-type", "")
    if not ctype.startswith("multipart/form-data"):
        raise ConfigError("send the image as multipart/form-data with a field named 'file'")

    async def stream():
        yield bytes(body)
        yield b""

    try:
        form = await _InMemoryParser(request.headers, stream(), max_files=1, max_fields=30).parse()
    except Exception as exc:  # malformed multipart
        raise ConfigError(
            f"malformed upload: {str(exc).splitlines()[0][:120] if str(exc) else 'bad form'}"
        ) from None
    upload = form.get("file")
    if upload is None or isinstance(upload, str):
        raise ConfigError("no image: send it in a form field named 'file'")
    data = await upload.read()
    await upload.close()
    if len(data) > cap:
        raise UploadTooLarge(f"the upload is larger than the {cap // (1024 * 1024)} MiB limit")
    return data, form


def search_href(
    image_id: int | None,
    model: str | None,
    k: int | None = None,
    filters: Cohort | None = None,
    upload: str | None = None,
    **extra: Any,
) -> str:
    """The search page's URL for a query by id (or a kept upload), keeping the model, k and filters."""
    from urllib.parse import urlencode

    params: dict[str, Any] = {"upload": upload} if upload else {"image_id": image_id}
    if model:
        params["model"] = model
    if k is not None:
        params["k"] = k
    if filters is not None:
        params.update({key: ("true" if v is True else v) for key, v in filters.as_params().items()})
    params.update({key: v for key, v in extra.items() if v is not None})
    return "/?" + urlencode(params)


# --------------------------------------------------------------------------- the app
@dataclass
class _App:
    """What the routes share: the database store, the settings, the PNG cache and the templates."""

    store: Store
    config: ServeConfig
    cache: PngCache
    templates: Jinja2Templates
    gate: Gate
    uploads: UploadStore


def png_response(request: Request, png: bytes, etag: str) -> Response:
    headers = {"ETag": f'"{etag}"', "Cache-Control": "private, max-age=86400"}
    if request.headers.get("if-none-match", "").strip() in (f'"{etag}"', f'W/"{etag}"', etag):
        return Response(status_code=304, headers=headers)
    return Response(png, media_type="image/png", headers=headers)


def default_model(models: list[dict]) -> str | None:
    return models[0]["model"] if models else None


def with_frames(hits: list[dict], query_label: str | None) -> list[dict]:
    for h in hits:
        h["match"] = None if query_label is None else h["label"] == query_label
    return hits


#: neighbours per model in a side-by-side comparison
COMPARE_K = 8


def compare_columns(columns: list[dict]) -> list[dict]:
    """Side-by-side columns, one per model: each neighbour also gets its rank in the other columns
    (``also``), because similarity values are not comparable between models, ranks are."""
    if len(columns) < 2:
        return columns
    ranks = {c["model"]: {h["image_id"]: h["rank"] for h in c["hits"]} for c in columns}
    for c in columns:
        for h in c["hits"]:
            h["also"] = [
                {"model": m, "rank": r[h["image_id"]]}
                for m, r in ranks.items()
                if m != c["model"] and h["image_id"] in r
            ]
    return columns


def audit(request: Request, action: str, image_ids=(), filters: dict | None = None) -> None:
    """Say what this request did, for its ``cbir.audit_log`` row (written by the middleware once the
    response status is known)."""
    request.state.audit = {
        "action": action,
        "image_ids": [int(i) for i in image_ids if i is not None],
        "filters": filters or {},
    }


def search_filters(model: str | None, k: int, f: Cohort, **extra) -> dict:
    return {"model": model, "k": k, **f.as_params(), **extra}


def hit_ids(image_id: int | None, hits: list[dict]) -> list[int | None]:
    """The ids an audit row names for a search: the query's, then its neighbours'."""
    return [image_id, *(h["image_id"] for h in hits)]


async def upload_search(request: Request, w: _App, actor: Actor) -> tuple[dict, list[dict], str, int, Cohort]:
    audit(request, "upload")
    data, form = await read_upload(request, w.config.max_upload_bytes)
    f, k = parse_filters(form), parse_k(form)
    model = await run_in_threadpool(w.store.model_or_default, actor, _opt(form, "model"))
    audit(request, "upload", filters=search_filters(model, k, f))
    await run_in_threadpool(w.store.check_model, actor, model)
    await run_in_threadpool(w.store.check_filters, actor, f)
    query, hits = await run_in_threadpool(w.store.search_upload, actor, data, model, k, f)
    label = None
    if query["image_id"] is not None:
        label = (await run_in_threadpool(w.store.image, actor, query["image_id"]))["label"]
    query["label"] = label
    audit(
        request,
        "upload",
        hit_ids(query["image_id"], hits),
        search_filters(model, k, f, stored=query["stored"]),
    )
    return query, with_frames(hits, label), model, k, f


# --------------------------------------------------------------------------- errors and headers
def _is_api(request: Request) -> bool:
    return request.url.path.startswith("/api/")


def _error_response(templates: Jinja2Templates, request: Request, status: int, message: str) -> Response:
    """The one error shape: JSON ``{"error", "status"}`` under /api/, the error page elsewhere."""
    if _is_api(request):
        return JSONResponse({"error": message, "status": status}, status_code=status)
    return templates.TemplateResponse(
        request, "error.html", {"status": status, "message": message, "page": "error"}, status_code=status
    )


def _login_redirect(request: Request) -> Response:
    """A page asked for without a session goes to the login form (and comes back after it)."""
    from urllib.parse import urlencode

    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse("/login?" + urlencode({"next": target}), status_code=303)


def _validation_message(exc: RequestValidationError) -> str:
    errs = exc.errors()
    first = errs[0] if errs else {}
    where = ".".join(str(x) for x in first.get("loc", ())[1:]) or "request"
    return f"bad {where}: {first.get('msg', 'invalid value')}"


def _add_error_handlers(app: FastAPI, w: _App) -> None:
    """Every error in :func:`_error_response`'s one shape, with the status :func:`status_of` gives."""
    templates = w.templates

    @app.exception_handler(NotAuthenticated)
    async def _not_authenticated(request: Request, exc: NotAuthenticated) -> Response:
        """401 on the API; a page redirects to the login form (and comes back after it)."""
        if _is_api(request) or request.method != "GET":
            response = _error_response(templates, request, 401, str(exc))
        else:
            response = _login_redirect(request)
        if COOKIE in request.cookies:
            response.delete_cookie(COOKIE, path="/")
        return response

    @app.exception_handler(CbirError)
    async def _cbir_error(request: Request, exc: CbirError) -> Response:
        return _error_response(templates, request, status_of(exc), public_message(exc, request.url.path))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        return _error_response(templates, request, 400, _validation_message(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        message = "no such page" if exc.status_code == 404 else str(exc.detail)
        return _error_response(templates, request, exc.status_code, message)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.error("unexpected error on %s: %s", request.url.path, type(exc).__name__, exc_info=exc)
        return _error_response(templates, request, 500, "internal error: the server log has the details")


#: the search parameters of the API, declared in its OpenAPI description (the routes read them with
#: :func:`parse_filters` and :func:`parse_k`, so the page and the API share one parser)
SEARCH_PARAMETERS: list[tuple[str, dict[str, Any], str]] = [
    ("model", {"type": "string"}, "encoder key (default: the first model with vectors)"),
    ("k", {"type": "integer", "minimum": 1, "maximum": MAX_K, "default": 10}, "number of neighbours"),
    ("split", {"type": "string", "enum": list(SPLITS)}, "only neighbours from this split"),
    ("dataset", {"type": "string"}, "only neighbours from this dataset key"),
    ("modality", {"type": "string"}, "only neighbours of this modality"),
    ("label", {"type": "string"}, "only neighbours with this label key, e.g. XR/chest/pneumonia"),
    ("sex", {"type": "string", "enum": ["F", "M", "O"]}, "only neighbours of patients of this sex"),
    ("age_min", {"type": "number", "minimum": 0}, "only patients at least this old"),
    ("age_max", {"type": "number", "maximum": 150}, "only patients at most this old"),
    ("exclude_same_patient", {"type": "boolean", "default": False}, "leave out the query's patient"),
    ("same_patient", {"type": "boolean", "default": False}, "only the query's own patient's images"),
    ("cohort", {"type": "string"}, "only images of this saved cohort (cbir.cohort)"),
]


def _query_parameters() -> list[dict[str, Any]]:
    return [
        {"name": name, "in": "query", "required": False, "schema": schema, "description": text}
        for name, schema, text in SEARCH_PARAMETERS
    ]


def _form_properties() -> dict[str, Any]:
    return {name: {**schema, "description": text} for name, schema, text in SEARCH_PARAMETERS}


def _upload_body() -> dict[str, Any]:
    """The OpenAPI request body of ``POST /api/search``: the file and the search parameters."""
    properties = {"file": {"type": "string", "format": "binary"}, **_form_properties()}
    schema = {"type": "object", "required": ["file"], "properties": properties}
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": schema}}}}


def api_similar_search(request: Request, store: Store, actor: Actor, image_id: int) -> dict:
    """``GET /api/images/{id}/similar``: the k nearest among the cohort of the query parameters."""
    audit(request, "search", [image_id])
    p = request.query_params
    f, k = parse_filters(p), parse_k(p)
    model = store.model_or_default(actor, _opt(p, "model"))
    audit(request, "search", [image_id], search_filters(model, k, f))
    label, hits = store.search_by_id(actor, image_id, model, k, f)  # one statement, not store.image()'s six
    hits = with_frames(hits, label)
    audit(request, "search", hit_ids(image_id, hits), search_filters(model, k, f))
    return {
        "query": {"image_id": image_id, "label": label},
        "model": model,
        "k": k,
        "filters": f.as_params(),
        "neighbours": hits,
    }


def _add_api_image_routes(app: FastAPI, w: _App) -> None:
    """The JSON API's catalogue and one image: models, metadata, thumbnail and pixels."""
    store, cache = w.store, w.cache

    @app.get("/api/models", tags=["api"], summary="models with stored vectors")
    def api_models(actor: CurrentActor) -> dict:
        return {"models": store.models(actor)}

    @app.get(
        "/api/images/{image_id}", tags=["api"], summary="one image's metadata (no patient data, no path)"
    )
    def api_image(request: Request, image_id: ImageId, actor: CurrentActor) -> dict:
        audit(request, "image", [image_id])
        return store.image(actor, image_id)

    @app.get("/api/images/{image_id}/thumbnail", tags=["api"], summary=f"PNG thumbnail (≤ {THUMB_SIDE} px)")
    def api_thumbnail(request: Request, image_id: ImageId, actor: CurrentActor) -> Response:
        audit(request, "thumbnail", [image_id])
        path, h = store.image_file(actor, image_id)
        return png_response(request, *cache.get(path, h, f"t{THUMB_SIDE}", THUMB_SIDE))

    @app.get(
        "/api/images/{image_id}/pixels", tags=["api"], summary=f"PNG of the decoded image (≤ {FULL_SIDE} px)"
    )
    def api_pixels(request: Request, image_id: ImageId, actor: CurrentActor) -> Response:
        audit(request, "pixels", [image_id])
        if not may(actor, "pixels"):
            raise Forbidden("you may not fetch pixels")
        path, h = store.image_file(actor, image_id)
        return png_response(request, *cache.get(path, h, f"full{FULL_SIDE}", FULL_SIDE))


def _add_api_search_routes(app: FastAPI, w: _App) -> None:
    """The JSON API's searches (by a stored image, by an upload) and the leaderboard."""
    store = w.store

    @app.get(
        "/api/images/{image_id}/similar",
        tags=["api"],
        summary="k most similar images (cbir.similar_images_v2) among a cohort",
        description="Every filter runs inside the SQL function's index scan (exactly k rows when k "
        "images of the cohort exist).",
        openapi_extra={"parameters": _query_parameters()},
    )
    async def api_similar(request: Request, image_id: ImageId, actor: CurrentActor) -> dict:
        # one worker-thread hop for the whole search; a sync route would take a second for the response
        return await run_in_threadpool(api_similar_search, request, store, actor, image_id)

    @app.post(
        "/api/search",
        tags=["api"],
        summary="k most similar images to an uploaded image",
        openapi_extra=_upload_body(),
    )
    async def api_search(request: Request, actor: CurrentActor) -> dict:
        query, hits, model, k, f = await upload_search(request, w, actor)
        q = {
            "image_id": query["image_id"],
            "stored": query["stored"],
            "label": query["label"],
            "embedded_on_the_fly": not query["stored"],
        }
        return {"query": q, "model": model, "k": k, "filters": f.as_params(), "neighbours": hits}

    @app.get(
        "/api/leaderboard", tags=["api"], summary="the cbir_report leaderboard, per-class P@N, ANN quality"
    )
    def api_leaderboard(actor: CurrentActor) -> dict:
        return store.results(actor)


# --------------------------------------------------------------------------- the pages
def search_context(w: _App, request: Request, actor: Actor, **extra) -> dict:
    """The search page's template context before any search: the models, filter options and form."""
    models = w.store.models(actor)
    ctx = {
        "page": "search",
        "models": models,
        "options": w.store.filter_options(actor),
        "form": {k: v for k, v in request.query_params.items()},
        "model": default_model(models),
        "k": 10,
        "query": None,
        "hits": None,
        "error": None,
        "upload": None,
        "columns": None,
    }
    ctx.update(extra)
    return ctx


def run_upload(
    w: _App, ctx: dict, actor: Actor, token: str, model: str, k: int, f: Cohort, compare: bool
) -> None:
    """A kept upload (item 4: a new filter, model or k re-runs the same uploaded image); only the
    user who uploaded it gets it back."""
    store = w.store
    up = w.uploads.get(token, actor.name)
    query, hits = store.search_pixels(actor, up, model, k, f)
    label = store.image(actor, query["image_id"])["label"] if query["stored"] else None
    ctx["hits"] = with_frames(hits, label)
    ctx["filters"] = f
    ctx["upload"] = token
    ctx["query"] = {
        "image_id": query["image_id"],
        "label": label,
        "thumb": "data:image/png;base64," + base64.b64encode(up.thumb_png).decode(),
        "uploaded": True,
        "stored": query["stored"],
    }
    if compare:
        columns = []
        for m in [m["model"] for m in store.models(actor)]:
            q, h = store.search_pixels(actor, up, m, COMPARE_K, f)
            columns.append({"model": m, "hits": with_frames(h, label), "stored": q["stored"]})
        ctx["columns"] = compare_columns(columns)


def run_similar(
    w: _App, request: Request, ctx: dict, actor: Actor, image_id: int, model: str, k: int, f: Cohort
) -> None:
    """A stored query on the page: its neighbours among the cohort, the overlay methods and Refine."""
    from cbir_pg.app.serve.feedback import page_context

    store = w.store
    info = store.image(actor, image_id)
    ctx["query"] = {
        "image_id": image_id,
        "label": info["label"],
        "dataset": info["dataset"],
        "split": info["split"],
        "thumb": f"/api/images/{image_id}/thumbnail",
    }
    ctx["hits"] = with_frames(store.similar(actor, image_id, model, k, f), info["label"])
    ctx["filters"] = f
    ctx.update(page_context(request, store, actor, image_id, model, k, f, ctx["hits"], with_frames))
    audit(
        request,
        "search",
        hit_ids(image_id, ctx["hits"]),
        search_filters(model, k, f, refined=ctx["refined"] is not None),
    )


def search_page(w: _App, request: Request, actor: Actor) -> Response:
    """``GET /``: the form, and the search its parameters ask for (by image id or by a kept upload)."""
    audit(request, "page_view")
    ctx = search_context(w, request, actor)
    p = request.query_params
    try:
        f, k = parse_filters(p), parse_k(p)
        ctx["k"] = k
        model = _opt(p, "model") or ctx["model"]
        ctx["model"] = model
        image_id = parse_image_id(p)
        token = _opt(p, "upload")
        if image_id is not None or token is not None:
            if model is None:
                raise NotFoundError("no model has stored vectors yet")
            audit(request, "search", [image_id], search_filters(model, k, f, upload=token is not None))
            w.store.check_model(actor, model)
            w.store.check_filters(actor, f)
        if token is not None:
            if not may(actor, "upload"):
                raise Forbidden("uploads are not allowed for this user")
            run_upload(w, ctx, actor, token, model, k, f, compare=_opt(p, "compare") is not None)
        elif image_id is not None:
            run_similar(w, request, ctx, actor, image_id, model, k, f)
    except CbirError as exc:
        ctx["error"] = public_message(exc, request.url.path)
        return w.templates.TemplateResponse(request, "search.html", ctx, status_code=status_of(exc))
    return w.templates.TemplateResponse(request, "search.html", ctx)


async def upload_page(w: _App, request: Request, actor: Actor) -> Response:
    """``POST /``: an upload is decoded, kept for this user's session under a token, and the browser is
    sent to the GET page of that token (so a new filter, model or k, or a reload, re-runs the same upload)."""
    from cbir_pg.images import decode_bytes

    audit(request, "upload")
    try:
        if not may(actor, "upload"):
            raise Forbidden("uploads are not allowed for this user")
        data, form = await read_upload(request, w.config.max_upload_bytes)
        f, k = parse_filters(form), parse_k(form)
        rgb = await run_in_threadpool(decode_bytes, data, "the upload")
    except CbirError as exc:
        ctx = await run_in_threadpool(search_context, w, request, actor)
        ctx["error"] = public_message(exc, request.url.path)
        return w.templates.TemplateResponse(request, "search.html", ctx, status_code=status_of(exc))
    token = w.uploads.put(Upload(rgb, render_png(rgb, THUMB_SIDE), owner=actor.name))
    return RedirectResponse(search_href(None, _opt(form, "model"), k, f, upload=token), status_code=303)


def image_page(w: _App, request: Request, actor: Actor, image_id: int) -> Response:
    """``GET /images/{id}``: one image with its nearest neighbours in every model, side by side."""
    from cbir_pg.app.serve.feedback import method_options

    store = w.store
    audit(request, "page_view", [image_id])
    info = store.image(actor, image_id)
    columns = compare_columns(
        [
            {
                "model": m,
                "hits": with_frames(store.similar(actor, image_id, m, COMPARE_K, Cohort()), info["label"]),
                "methods": method_options(request.app.state, actor, m),
            }
            for m in info["models"]
        ]
    )
    audit(
        request,
        "page_view",
        [image_id, *(h["image_id"] for c in columns for h in c["hits"])],
        {"models": info["models"], "k": COMPARE_K},
    )
    return w.templates.TemplateResponse(
        request, "image.html", {"page": "image", "info": info, "columns": columns, "k": COMPARE_K}
    )


def report_figure_response(config: ServeConfig, request: Request, actor: Actor, name: str) -> Response:
    """``GET /report/{name}``: one PNG of the report directory, for the server's owner only."""
    audit(request, "page_view", filters={"figure": name[:60]})
    if not may(actor, "report_figures"):
        raise Forbidden("the report figures cover every dataset: only the server's owner sees them")
    if config.report_dir is None or "/" in name or not name.endswith(".png") or name.startswith("."):
        raise NotFoundError(f"no report figure {name[:60]!r}")
    try:
        data = (config.report_dir / name).read_bytes()
    except OSError:
        raise NotFoundError(f"no report figure {name[:60]!r}") from None
    return Response(data, media_type="image/png", headers={"Cache-Control": "private, max-age=60"})


def _add_search_pages(app: FastAPI, w: _App) -> None:
    """The search page: ``GET /`` (by image id or kept upload) and ``POST /`` (an upload)."""

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page_search(request: Request, actor: CurrentActor) -> Response:
        return search_page(w, request, actor)

    @app.post("/", response_class=HTMLResponse, include_in_schema=False)
    async def page_upload(request: Request, actor: CurrentActor) -> Response:
        return await upload_page(w, request, actor)


def _add_pages(app: FastAPI, w: _App) -> None:
    """The other server-rendered pages: one image, the results and the report figures."""
    store, config, templates = w.store, w.config, w.templates

    @app.get("/images/{image_id}", response_class=HTMLResponse, include_in_schema=False)
    def page_image(request: Request, image_id: ImageId, actor: CurrentActor) -> Response:
        return image_page(w, request, actor, image_id)

    @app.get("/results", response_class=HTMLResponse, include_in_schema=False)
    def page_results(request: Request, actor: CurrentActor) -> Response:
        from cbir_pg.app.serve.figures import report_figures

        audit(request, "page_view")
        figures = report_figures(config.report_dir) if may(actor, "report_figures") else []
        return templates.TemplateResponse(
            request, "results.html", {"page": "results", **store.results(actor), "figures": figures}
        )

    @app.get("/report/{name}", include_in_schema=False)
    def report_figure(request: Request, name: str, actor: CurrentActor) -> Response:
        return report_figure_response(config, request, actor, name)


def safe_next(target: str | None) -> str:
    """Where to go after logging in: a path on this server, never another site."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target[:2000]


def _client_address(request: Request) -> str | None:
    return request.client.host if request.client else None


def _set_session(auth: AuthConfig, response: Response, cookie: str) -> Response:
    response.set_cookie(
        COOKIE, cookie, httponly=True, samesite="strict", secure=auth.secure_cookies, path="/"
    )
    return response


def _login_form(w: _App, request: Request, error: str | None, status: int, next_: str = "/") -> Response:
    ctx = {"page": "login", "error": error, "mode": w.config.auth.mode, "next": safe_next(next_)}
    return w.templates.TemplateResponse(request, "login.html", ctx, status_code=status)


def _logged_in(w: _App, request: Request, cookie: str, target: str) -> Response:
    """After a login: its audit row, the session cookie and the way on."""
    request.state.audit_actor = w.gate.sessions.get(cookie).actor
    audit(request, "login")
    return _set_session(w.config.auth, RedirectResponse(target, status_code=303), cookie)


async def login_submit(w: _App, request: Request) -> Response:
    """``POST /login``: the password form; a refusal is audited under the name tried (if a role name)."""
    form = await request.form(max_files=0, max_fields=5, max_part_size=4096)
    name, password = str(form.get("user") or ""), str(form.get("password") or "")
    next_ = str(form.get("next") or "/")
    try:
        cookie = await run_in_threadpool(w.gate.login, name, password, _client_address(request))
    except LoginRefused as exc:
        from cbir_pg.db.identifiers import ROLE_PATTERN

        shown = name.strip() if ROLE_PATTERN.fullmatch(name.strip()) else "(not a role name)"
        request.state.audit_actor = Actor(shown, "password", shown, _client_address(request))
        audit(request, "login_failed")
        return _login_form(w, request, str(exc), status_of(exc), next_)
    finally:
        del password
    return _logged_in(w, request, cookie, safe_next(next_))


def _add_login(app: FastAPI, w: _App) -> None:
    """``/login`` (the form, and the one-time link ``/login?token=...``) and ``/logout``."""

    @app.get("/login", response_class=HTMLResponse, include_in_schema=False)
    def login_page(request: Request) -> Response:
        token = request.query_params.get("token")
        if token is None:
            return _login_form(w, request, None, 200, request.query_params.get("next") or "/")
        try:
            cookie = w.gate.login_with_token(token, _client_address(request))
        except LoginRefused as exc:
            return _login_form(w, request, str(exc), status_of(exc))
        return _logged_in(w, request, cookie, "/")

    @app.post("/login", response_class=HTMLResponse, include_in_schema=False)
    async def post_login(request: Request) -> Response:
        return await login_submit(w, request)

    @app.post("/logout", include_in_schema=False)
    def logout(request: Request) -> Response:
        cookie = request.cookies.get(COOKIE)
        s = w.gate.sessions.get(cookie)
        if s is not None:
            request.state.audit_actor = s.actor
            audit(request, "logout")
        w.gate.logout(cookie)
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(COOKIE, path="/")
        return response


def create_app(store: Store, config: ServeConfig | None = None) -> FastAPI:
    """The web app over ``store`` (a pool of ``cbir_web`` connections), authenticating as
    ``config.auth`` says."""
    config = config or ServeConfig()
    cache = PngCache(config.cache_dir)
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.globals["max_k"] = MAX_K
    templates.env.globals["search_href"] = search_href
    app = FastAPI(
        title="cbir-pg",
        description="Similar-case search over medical images (cbir-pg). JSON only; errors are "
        '`{"error": message, "status": code}`.',
        version="1",
        openapi_url=None,  # served below, behind the login like every route
        docs_url=None,  # the bundled Swagger page loads from a CDN; the description is at /api/openapi.json
        redoc_url=None,
    )
    app.state.store = store
    gate = Gate(config.auth, store.check_login, store.role_oid)
    app.state.gate = gate
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    w = _App(store, config, cache, templates, gate, UploadStore())
    _add_error_handlers(app, w)
    add_guards(app, w.store.audit, list(config.auth.allowed_hosts))
    _add_login(app, w)
    _add_api_image_routes(app, w)
    _add_api_search_routes(app, w)
    from cbir_pg.app.serve.explain import add_explain_routes

    app.state.explainer = add_explain_routes(app, store, config.cache_dir.parent / "explain", audit=audit)
    from cbir_pg.app.serve.feedback import add_feedback_routes

    add_feedback_routes(app, store, parse_filters=parse_filters, parse_k=parse_k, audit=audit)
    _add_search_pages(app, w)
    _add_pages(app, w)

    @app.get("/api/openapi.json", include_in_schema=False)
    def openapi(actor: CurrentActor) -> dict:
        return app.openapi()

    return app
