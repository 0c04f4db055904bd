"""The ASGI app: server-rendered pages (search, image, results) and a JSON API under ``/api/``.

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
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartParser

from cbir_pg.app.serve.store import MAX_K, Filters, Store, check_k
from cbir_pg.app.serve.thumbs import FULL_SIDE, THUMB_SIDE, PngCache, render_png
from cbir_pg.errors import (
    CbirError,
    ConfigError,
    DatabaseError,
    InputError,
    NotFoundError,
    WeightsMissingError,
)

log = logging.getLogger("cbir_pg.serve")
HERE = Path(__file__).resolve().parent
MAX_ID = 2**63 - 1
#: default cap on an upload's size
DEFAULT_MAX_UPLOAD = 20 * 1024 * 1024


class UploadTooLarge(InputError):
    """An upload over the size cap (HTTP 413)."""


@dataclass
class ServeConfig:
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD
    report_dir: Path | None = None
    cache_dir: Path = field(default_factory=lambda: Path("cache"))


def status_of(exc: BaseException) -> int:
    """The HTTP status of a project error."""
    from cbir_pg.images import DecodeError

    if isinstance(exc, UploadTooLarge):
        return 413
    if isinstance(exc, DecodeError):
        return 413 if exc.reason == "decompression_bomb" else 415
    if isinstance(exc, NotFoundError):
        return 404
    if isinstance(exc, ConfigError | InputError):
        return 400
    if isinstance(exc, WeightsMissingError | DatabaseError):
        return 503
    return 500


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


def parse_filters(params) -> Filters:
    """Filters from query or form parameters (empty fields mean "any")."""
    flag = (_opt(params, "exclude_same_patient") or "").lower()
    if flag not in ("", "1", "true", "on", "yes", "0", "false", "off", "no"):
        raise ConfigError(f"exclude_same_patient must be true or false, got {flag[:20]!r}")
    return Filters(
        split=_opt(params, "split"),
        dataset=_opt(params, "dataset"),
        modality=_opt(params, "modality"),
        label=_opt(params, "label"),
        sex=_opt(params, "sex"),
        age_min=_number(params, "age_min"),
        age_max=_number(params, "age_max"),
        exclude_same_patient=flag in ("1", "true", "on", "yes"),
    )


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


def search_href(image_id: int, model: str, k: int | None = None, filters: Filters | None = None) -> str:
    """The search page's URL for a query by id, keeping the model, k and filters."""
    from urllib.parse import urlencode

    params: dict[str, Any] = {"image_id": image_id, "model": model}
    if k is not None:
        params["k"] = k
    if filters is not None:
        params.update({key: ("true" if v is True else v) for key, v in filters.as_params().items()})
    return "/?" + urlencode(params)


# --------------------------------------------------------------------------- the app
@dataclass
class _App:
    """What the routes share: the database store, the settings, the PNG cache and the templates."""

    store: Store
    config: ServeConfig
    cache: PngCache
    templates: Jinja2Templates


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


async def upload_search(request: Request, w: _App) -> tuple[dict, list[dict], str, int, Filters]:
    data, form = await read_upload(request, w.config.max_upload_bytes)
    f, k = parse_filters(form), parse_k(form)
    models = await run_in_threadpool(w.store.models)
    model = _opt(form, "model") or default_model(models)
    if model is None:
        raise NotFoundError("no model has stored vectors yet")
    await run_in_threadpool(w.store.check_model, model)
    await run_in_threadpool(w.store.check_filters, f)
    query, hits = await run_in_threadpool(w.store.search_upload, data, model, k, f)
    label = None
    if query["image_id"] is not None:
        label = (await run_in_threadpool(w.store.image, query["image_id"]))["label"]
    query["label"] = label
    return query, with_frames(hits, label), model, k, f


def _add_error_handlers(app: FastAPI, w: _App) -> None:
    """One error shape: JSON ``{"error", "status"}`` under /api/, the error page elsewhere; security
    headers on every response."""
    templates = w.templates

    def is_api(request: Request) -> bool:
        return request.url.path.startswith("/api/")

    def error_response(request: Request, status: int, message: str) -> Response:
        if is_api(request):
            return JSONResponse({"error": message, "status": status}, status_code=status)
        return templates.TemplateResponse(
            request, "error.html", {"status": status, "message": message, "page": "error"}, status_code=status
        )

    @app.exception_handler(CbirError)
    async def _cbir_error(request: Request, exc: CbirError) -> Response:
        status = status_of(exc)
        message = (
            str(exc)
            if status < 500 or isinstance(exc, WeightsMissingError)
            else "the database is unavailable"
        )
        return error_response(request, status, message)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        errs = exc.errors()
        first = errs[0] if errs else {}
        where = ".".join(str(x) for x in first.get("loc", ())[1:]) or "request"
        return error_response(request, 400, f"bad {where}: {first.get('msg', 'invalid value')}")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        message = "no such page" if exc.status_code == 404 else str(exc.detail)
        return error_response(request, exc.status_code, message)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.error("unexpected error on %s: %s", request.url.path, type(exc).__name__, exc_info=exc)
        return error_response(request, 500, "internal error: the server log has the details")

    @app.middleware("http")
    async def _headers(request: Request, call_next):
        response = await call_next(request)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        response.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
            "frame-ancestors 'none'; form-action 'self'",
        )
        response.headers.setdefault("Cache-Control", "no-store")
        return response


def _add_api_routes(app: FastAPI, w: _App) -> None:
    """The JSON API under /api/ (described at /api/openapi.json)."""
    store, cache = w.store, w.cache

    @app.get("/api/models", tags=["api"], summary="models with stored vectors")
    def api_models() -> dict:
        return {"models": store.models()}

    @app.get(
        "/api/images/{image_id}", tags=["api"], summary="one image's metadata (no patient data, no path)"
    )
    def api_image(image_id: int = PathParam(ge=1, le=MAX_ID)) -> dict:
        return store.image(image_id)

    @app.get("/api/images/{image_id}/thumbnail", tags=["api"], summary=f"PNG thumbnail (≤ {THUMB_SIDE} px)")
    def api_thumbnail(request: Request, image_id: int = PathParam(ge=1, le=MAX_ID)) -> Response:
        path, h = store.image_file(image_id)
        return png_response(request, *cache.get(path, h, f"t{THUMB_SIDE}", THUMB_SIDE))

    @app.get(
        "/api/images/{image_id}/pixels", tags=["api"], summary=f"PNG of the decoded image (≤ {FULL_SIDE} px)"
    )
    def api_pixels(request: Request, image_id: int = PathParam(ge=1, le=MAX_ID)) -> Response:
        path, h = store.image_file(image_id)
        return png_response(request, *cache.get(path, h, f"full{FULL_SIDE}", FULL_SIDE))

    @app.get(
        "/api/images/{image_id}/similar",
        tags=["api"],
        summary="k most similar images (cbir.similar_images) with filters",
        description="Query parameters: model, k (1-100), split, dataset, modality, label, sex, age_min, "
        "age_max, exclude_same_patient.",
    )
    def api_similar(request: Request, image_id: int = PathParam(ge=1, le=MAX_ID)) -> dict:
        p = request.query_params
        f, k = parse_filters(p), parse_k(p)
        model = _opt(p, "model") or default_model(store.models())
        if model is None:
            raise NotFoundError("no model has stored vectors yet")
        store.check_model(model)
        store.check_filters(f)
        info = store.image(image_id)
        hits = with_frames(store.similar(image_id, model, k, f), info["label"])
        return {
            "query": {"image_id": image_id, "label": info["label"]},
            "model": model,
            "k": k,
            "filters": f.as_params(),
            "neighbours": hits,
        }

    upload_body = {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["file"],
                        "properties": {
                            "file": {"type": "string", "format": "binary"},
                            "model": {"type": "string"},
                            "k": {"type": "integer", "minimum": 1, "maximum": MAX_K},
                            "split": {"type": "string", "enum": ["train", "val", "test"]},
                            "dataset": {"type": "string"},
                            "modality": {"type": "string"},
                            "label": {"type": "string"},
                            "sex": {"type": "string", "enum": ["F", "M", "O"]},
                            "age_min": {"type": "number"},
                            "age_max": {"type": "number"},
                        },
                    }
                }
            },
        }
    }

    @app.post(
        "/api/search",
        tags=["api"],
        summary="k most similar images to an uploaded image",
        openapi_extra=upload_body,
    )
    async def api_search(request: Request) -> dict:
        query, hits, model, k, f = await upload_search(request, w)
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
    def api_leaderboard() -> dict:
        return store.results()


def _add_pages(app: FastAPI, w: _App) -> None:
    """The server-rendered pages: search, image, results and the report figures."""
    store, config, templates = w.store, w.config, w.templates

    def search_context(request: Request, **extra) -> dict:
        models = store.models()
        ctx = {
            "page": "search",
            "models": models,
            "options": store.filter_options(),
            "form": {k: v for k, v in request.query_params.items()},
            "model": default_model(models),
            "k": 10,
            "query": None,
            "hits": None,
            "error": None,
        }
        ctx.update(extra)
        return ctx

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page_search(request: Request) -> Response:
        ctx = search_context(request)
        p = request.query_params
        try:
            f, k = parse_filters(p), parse_k(p)
            ctx["k"] = k
            model = _opt(p, "model") or ctx["model"]
            ctx["model"] = model
            image_id = parse_image_id(p)
            if image_id is not None:
                if model is None:
                    raise NotFoundError("no model has stored vectors yet")
                store.check_model(model)
                store.check_filters(f)
                info = store.image(image_id)
                ctx["query"] = {
                    "image_id": image_id,
                    "label": info["label"],
                    "dataset": info["dataset"],
                    "split": info["split"],
                    "thumb": f"/api/images/{image_id}/thumbnail",
                }
                ctx["hits"] = with_frames(store.similar(image_id, model, k, f), info["label"])
                ctx["filters"] = f
                from cbir_pg.app.serve.feedback import page_context

                ctx.update(page_context(request, store, image_id, model, k, f, ctx["hits"], with_frames))
        except CbirError as exc:
            ctx["error"] = str(exc)
            return templates.TemplateResponse(request, "search.html", ctx, status_code=status_of(exc))
        return templates.TemplateResponse(request, "search.html", ctx)

    @app.post("/", response_class=HTMLResponse, include_in_schema=False)
    async def page_upload(request: Request) -> Response:
        ctx = await run_in_threadpool(search_context, request)
        try:
            query, hits, model, k, f = await upload_search(request, w)
        except CbirError as exc:
            ctx["error"] = str(exc)
            return templates.TemplateResponse(request, "search.html", ctx, status_code=status_of(exc))
        thumb = "data:image/png;base64," + base64.b64encode(render_png(query.pop("rgb"), THUMB_SIDE)).decode()
        ctx.update(
            model=model,
            k=k,
            hits=hits,
            filters=f,
            form={
                **f.as_params(),
                "model": model,
                "k": str(k),
                "image_id": str(query["image_id"]) if query["stored"] else "",
            },
        )
        ctx["query"] = {
            "image_id": query["image_id"],
            "label": query["label"],
            "thumb": thumb,
            "uploaded": True,
            "stored": query["stored"],
        }
        return templates.TemplateResponse(request, "search.html", ctx)

    @app.get("/images/{image_id}", response_class=HTMLResponse, include_in_schema=False)
    def page_image(request: Request, image_id: int = PathParam(ge=1, le=MAX_ID)) -> Response:
        info = store.image(image_id)
        k = 8
        from cbir_pg.app.serve.feedback import method_options

        columns = [
            {
                "model": m,
                "hits": with_frames(store.similar(image_id, m, k, Filters()), info["label"]),
                "methods": method_options(request.app.state, m),
            }
            for m in info["models"]
        ]
        return templates.TemplateResponse(
            request, "image.html", {"page": "image", "info": info, "columns": columns, "k": k}
        )

    @app.get("/results", response_class=HTMLResponse, include_in_schema=False)
    def page_results(request: Request) -> Response:
        figures = []
        if config.report_dir is not None and config.report_dir.is_dir():
            figures = sorted(p.name for p in config.report_dir.glob("*.png"))
        return templates.TemplateResponse(
            request, "results.html", {"page": "results", **store.results(), "figures": figures}
        )

    @app.get("/report/{name}", include_in_schema=False)
    def report_figure(name: str) -> Response:
        if config.report_dir is None or "/" in name or not name.endswith(".png") or name.startswith("."):
            raise NotFoundError(f"no report figure {name[:60]!r}")
        path = config.report_dir / name
        try:
            data = path.read_bytes()
        except OSError:
            raise NotFoundError(f"no report figure {name[:60]!r}") from None
        return Response(data, media_type="image/png", headers={"Cache-Control": "private, max-age=60"})


def create_app(store: Store, config: ServeConfig | None = None) -> FastAPI:
    """The web app over ``store`` (a pool of ``cbir_web`` connections)."""
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
        openapi_url="/api/openapi.json",
        docs_url=None,  # the bundled Swagger page loads from a CDN; the description is at /api/openapi.json
        redoc_url=None,
    )
    app.state.store = store
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    w = _App(store, config, cache, templates)
    _add_error_handlers(app, w)
    _add_api_routes(app, w)
    from cbir_pg.app.serve.explain import add_explain_routes

    app.state.explainer = add_explain_routes(app, store, config.cache_dir.parent / "explain")
    from cbir_pg.app.serve.feedback import add_feedback_routes

    add_feedback_routes(app, store, parse_filters=parse_filters, parse_k=parse_k, default_model=default_model)
    _add_pages(app, w)
    return app
