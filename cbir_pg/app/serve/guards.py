"""The middleware of every request, as plain ASGI: the allowed Host names (Starlette's
``TrustedHostMiddleware``, outermost: DNS rebinding), the CSRF origin check of a state-changing request,
one ``cbir.audit_log`` row per request of a known person, written before its response leaves, and the
security headers.

Plain ASGI, not ``@app.middleware("http")``: each such layer runs the rest of the app in a task of its own
and passes the response through a stream, about a millisecond a request on two cores, the most of what a
search by id waited for besides its statement (docs/benchmarks.md).
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers

log_audit = logging.getLogger("cbir_pg.serve.audit")

#: the security headers of every response (a route may set its own Cache-Control)
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "frame-ancestors 'none'; form-action 'self'",
    "Cache-Control": "no-store",
}
_SECURITY = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in SECURITY_HEADERS.items()]

STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def ip_or_none(address: str | None) -> str | None:
    try:
        return str(ipaddress.ip_address(address or ""))
    except ValueError:
        return None


def same_origin(headers: Headers) -> bool:
    """Whether a state-changing request comes from this server's own pages (CSRF).

    A browser says so in ``Sec-Fetch-Site`` (a header no page can set): ``same-origin``, or ``none`` for
    the user's own action. Without it, the ``Origin`` must name this host (the pages' ``no-referrer``
    policy makes a browser send ``Origin: null`` for its own form posts, hence the order); a client that
    sends neither (curl, scripts) is no browser and cannot be made to send the session cookie by another
    site."""
    from urllib.parse import urlsplit

    site = headers.get("sec-fetch-site")
    if site is not None:
        return site in ("same-origin", "none")
    origin = headers.get("origin")
    if origin is None:
        return True
    if origin == "null":
        return False
    parts = urlsplit(origin)
    return bool(parts.netloc) and parts.netloc.lower() == (headers.get("host") or "").lower()


def _with_security_headers(message: dict[str, Any]) -> dict[str, Any]:
    headers = list(message.get("headers", []))
    present = {name.lower() for name, _ in headers}
    headers.extend((name, value) for name, value in _SECURITY if name not in present)
    return {**message, "headers": headers}


async def _refuse(scope, receive, send, status: int, text: str) -> None:
    """Answer with the API's one error shape (``{"error": ..., "status": ...}``) and the security headers."""
    from starlette.responses import JSONResponse

    async def secured(message: dict[str, Any]) -> None:
        await send(_with_security_headers(message) if message["type"] == "http.response.start" else message)

    await JSONResponse({"error": text, "status": status}, status_code=status)(scope, receive, secured)


def audit_entry(scope: dict[str, Any], status: int) -> dict[str, Any] | None:
    """The ``cbir.audit_log`` row of a finished request, or None when no person is known (the login form,
    static files, a request refused before its actor was resolved). Routes say what they did with
    :func:`~cbir_pg.app.serve.web.audit` (``request.state.audit``); the actor is the one
    :func:`~cbir_pg.app.serve.auth.current_actor` resolved (or ``audit_actor``: a login or a logout)."""
    state = scope.get("state") or {}
    actor = state.get("audit_actor") or state.get("actor")
    if actor is None:
        return None
    path = scope["path"]
    note = state.get("audit") or {
        "action": "api" if path.startswith("/api/") else "page_view",
        "image_ids": [],
        "filters": {},
    }
    return {
        "actor": actor.name,
        "auth": actor.auth,
        "address": ip_or_none(actor.address),
        "method": scope["method"],
        "path": path[:500],
        "status": status,
        **note,
    }


class Guards:
    """The origin check, the audit row and the security headers, around the app (inside the Host check)."""

    def __init__(self, app, write_audit: Callable[[dict[str, Any]], None]):
        self.app = app
        self.write_audit = write_audit

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["method"] in STATE_CHANGING and not same_origin(Headers(scope=scope)):
            await _refuse(
                scope, receive, send, 403, "cross-origin request refused (the Origin is not this server)"
            )
            return
        scope.setdefault("state", {})  # the routes' request.state: who acted and what they did
        refused = False

        async def guarded_send(message: dict[str, Any]) -> None:
            nonlocal refused
            if refused:
                return  # the route's response was replaced by the 503 below
            if message["type"] == "http.response.start":
                entry = audit_entry(scope, message["status"])
                if entry is not None:
                    try:
                        await run_in_threadpool(self.write_audit, entry)
                    except Exception as exc:  # no response without its audit row
                        log_audit.error(
                            "cannot write the audit row of %s: %s", scope["path"], type(exc).__name__
                        )
                        refused = True
                        await _refuse(scope, receive, send, 503, "the audit trail cannot be written")
                        return
                message = _with_security_headers(message)
            await send(message)

        await self.app(scope, receive, guarded_send)


def add_guards(app, write_audit: Callable[[dict[str, Any]], None], allowed_hosts: list[str]) -> None:
    """The guards, then the Host check around them (Starlette: the last added is the outermost)."""
    from starlette.middleware.trustedhost import TrustedHostMiddleware

    app.add_middleware(Guards, write_audit=write_audit)
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts)
