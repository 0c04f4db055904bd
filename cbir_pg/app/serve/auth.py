"""Who is acting on ``cbir-pg serve``, resolved once per request (docs/serve.md "Logging in").

The people who use the page are the database's own login roles: ``cbir-pg db roles add alice --reader``
lets alice in, ``cbir-pg db roles drop alice`` locks her out (her open sessions included).

- :class:`Actor`: the acting person, the one notion every route receives through the FastAPI dependency
  :func:`current_actor` and passes down (``store.image(actor, ...)``); never re-derived.
- :func:`may`: the one permission function.
- :class:`Gate`: how an actor is established: a login form checked by PostgreSQL itself (a connection is
  opened as that role with the given password over the server's scram path), a one-time login link
  printed at start (the server owner, Jupyter style), or a user-name header trusted only from the
  configured proxy addresses (``--auth proxy``: single sign-on by an OIDC proxy in front).
- :class:`Sessions`: server-side sessions behind a signed, HttpOnly, SameSite=Strict cookie (Secure under
  TLS) with an idle and an absolute expiry; logout ends one. A restarted server forgets every session.
- :class:`FailureLimiter`: at most ``max_failures`` failed logins per user name and per client address in
  a sliding window; past it, logins are refused without asking PostgreSQL.

Queries for a logged-in person run with that person's privileges: :meth:`Store.conn(actor)
<cbir_pg.app.serve.store.Store.conn>` issues ``set local role NAME`` on the server's ``cbir_web``
connection, and row-level security (``sql/schema/92_access.sql``) shows only the datasets granted to
them. Passwords are never kept, logged or shown: they go to libpq once and are dropped.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request

from cbir_pg.errors import CbirError

#: the session cookie's name
COOKIE = "cbir_session"
#: authentication modes of ``--auth``
MODES = ("local", "password", "proxy")
#: the name the one-time link's session acts under (the server owner's view: every dataset)
OWNER = "owner"
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")


class NotAuthenticated(CbirError):
    """No valid session (HTTP 401 on the API, a redirect to the login page for pages)."""


class LoginRefused(CbirError):
    """A failed login: one message whatever the cause, so it reveals nothing."""


class TooManyFailures(LoginRefused):
    """Too many failed logins for this user name or address (HTTP 429)."""


class Forbidden(CbirError):
    """Logged in, but this actor may not do that (HTTP 403)."""


@dataclass(frozen=True)
class Actor:
    """The person acting on one request.

    ``name`` is the database role (``"owner"`` for the one-time link), ``auth`` how they were
    authenticated (``password``, ``token`` or ``proxy``), ``role`` the role their queries run as under
    ``set local role`` (``None``: the server's own ``cbir_web`` role, which sees every dataset: the
    one-time link's owner session only), ``address`` the client's address."""

    name: str
    auth: str
    role: str | None
    address: str | None = None

    @property
    def is_owner(self) -> bool:
        return self.role is None


#: what each kind of actor may do beyond browsing the datasets row-level security shows them
_OWNER_ONLY = frozenset({"report_figures"})
ACTIONS = frozenset({"browse", "search", "upload", "pixels", "report_figures"})


def may(actor: Actor | None, action: str) -> bool:
    """The one permission question: may ``actor`` do ``action``?

    Every logged-in actor may browse, search, upload and fetch pixels (what they see is decided by
    PostgreSQL's row-level security, not here); the report figures (PNG files drawn by `cbir-pg report`
    over every dataset, which row security cannot filter) are for the server owner only."""
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}")
    if actor is None:
        return False
    if action in _OWNER_ONLY:
        return actor.is_owner
    return True


# --------------------------------------------------------------------------- sessions
@dataclass
class Session:
    actor: Actor
    created: float
    seen: float
    role_oid: int | None = None


class Sessions:
    """Server-side sessions keyed by a random id; the cookie holds ``id.signature`` (HMAC-SHA256 with a
    per-process key), so a forged or altered cookie is rejected before any lookup."""

    def __init__(self, idle_s: float, max_age_s: float, clock: Callable[[], float] = time.time):
        self.idle_s, self.max_age_s, self.clock = idle_s, max_age_s, clock
        self._key = secrets.token_bytes(32)
        self._by_id: dict[str, Session] = {}
        self._lock = threading.Lock()

    def _sign(self, sid: str) -> str:
        return hmac.new(self._key, sid.encode(), hashlib.sha256).hexdigest()

    def create(self, actor: Actor, role_oid: int | None = None) -> str:
        """A new session for ``actor``; returns the cookie value."""
        sid = secrets.token_urlsafe(32)
        now = self.clock()
        with self._lock:
            self._expire(now)
            self._by_id[sid] = Session(actor, now, now, role_oid)
        return f"{sid}.{self._sign(sid)}"

    def get(self, cookie: str | None) -> Session | None:
        """The live session of a cookie (its idle clock restarted), or ``None``."""
        if not cookie or "." not in cookie:
            return None
        sid, sig = cookie.rsplit(".", 1)
        if not hmac.compare_digest(sig, self._sign(sid)):
            return None
        now = self.clock()
        with self._lock:
            s = self._by_id.get(sid)
            if s is None:
                return None
            if now - s.seen > self.idle_s or now - s.created > self.max_age_s:
                del self._by_id[sid]
                return None
            s.seen = now
            return s

    def end(self, cookie: str | None) -> None:
        if cookie and "." in cookie:
            sid, sig = cookie.rsplit(".", 1)
            if hmac.compare_digest(sig, self._sign(sid)):
                with self._lock:
                    self._by_id.pop(sid, None)

    def end_all(self, name: str) -> None:
        """End every session of ``name`` (a dropped or changed role)."""
        with self._lock:
            for sid in [k for k, s in self._by_id.items() if s.actor.name == name]:
                del self._by_id[sid]

    def _expire(self, now: float) -> None:
        dead = [
            k
            for k, s in self._by_id.items()
            if now - s.seen > self.idle_s or now - s.created > self.max_age_s
        ]
        for k in dead:
            del self._by_id[k]


class FailureLimiter:
    """Failed logins per key (``user:NAME``, ``addr:ADDRESS``) in a sliding window of ``window_s``."""

    def __init__(self, max_failures: int, window_s: float, clock: Callable[[], float] = time.time):
        self.max_failures, self.window_s, self.clock = max_failures, window_s, clock
        self._fails: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> deque[float]:
        q = self._fails.setdefault(key, deque())
        while q and now - q[0] > self.window_s:
            q.popleft()
        return q

    def blocked(self, keys: Iterable[str]) -> float:
        """Seconds until a login for these keys may be tried again (0: now)."""
        now = self.clock()
        wait = 0.0
        with self._lock:
            for key in keys:
                q = self._recent(key, now)
                if len(q) >= self.max_failures:
                    wait = max(wait, self.window_s - (now - q[0]))
        return wait

    def fail(self, keys: Iterable[str]) -> None:
        now = self.clock()
        with self._lock:
            for key in keys:
                self._recent(key, now).append(now)

    def clear(self, key: str) -> None:
        with self._lock:
            self._fails.pop(key, None)


# --------------------------------------------------------------------------- configuration
@dataclass
class AuthConfig:
    """How ``cbir-pg serve`` authenticates (``--auth``, the proxy options, the session lifetimes).

    - ``local`` (default): the login form, plus the one-time link printed at start (``login_token``);
    - ``password``: the login form only (the mode for ``--allow-remote``);
    - ``proxy``: the user name comes from ``proxy_header``, trusted only from ``trusted_proxies``."""

    mode: str = "local"
    login_token: str | None = None
    idle_s: float = 30 * 60
    max_age_s: float = 12 * 3600
    secure_cookies: bool = False
    trusted_proxies: tuple[Any, ...] = ()
    proxy_header: str = "X-Forwarded-User"
    max_failures: int = 5
    failure_window_s: float = 15 * 60
    allowed_hosts: tuple[str, ...] = LOOPBACK_HOSTS
    clock: Callable[[], float] = field(default=time.time, repr=False)

    def __post_init__(self) -> None:
        from cbir_pg.errors import ConfigError

        if self.mode not in MODES:
            raise ConfigError(f"unknown --auth {self.mode!r}: use {', '.join(MODES)}")
        if self.mode == "proxy" and not self.trusted_proxies:
            raise ConfigError("--auth proxy needs --trusted-proxy ADDRESS (the proxy's address or network)")
        self.trusted_proxies = tuple(parse_networks(self.trusted_proxies))


def parse_networks(values: Iterable[Any]) -> list[Any]:
    from cbir_pg.errors import ConfigError

    out = []
    for v in values:
        if isinstance(v, ipaddress.IPv4Network | ipaddress.IPv6Network):
            out.append(v)
            continue
        try:
            out.append(ipaddress.ip_network(str(v), strict=False))
        except ValueError:
            raise ConfigError(f"--trusted-proxy {str(v)[:60]!r} is not an address or network") from None
    return out


def new_login_token() -> str:
    return secrets.token_urlsafe(32)


# --------------------------------------------------------------------------- the gate
class Gate:
    """Establishes and checks actors: login, the one-time link, sessions, the proxy header.

    ``check_login(name, password) -> role oid`` (PostgreSQL's verdict, raising :class:`LoginRefused`) and
    ``role_oid(name)`` (the role's oid if it may still use the page, else ``None``) come from the store."""

    def __init__(
        self,
        config: AuthConfig,
        check_login: Callable[[str, str], int],
        role_oid: Callable[[str], int | None],
    ):
        self.config = config
        self.sessions = Sessions(config.idle_s, config.max_age_s, config.clock)
        self.limiter = FailureLimiter(config.max_failures, config.failure_window_s, config.clock)
        self._check_login = check_login
        self._role_oid = role_oid
        self._token = config.login_token
        self._token_lock = threading.Lock()

    # ------------------------------------------------------------------ establishing
    def login(self, name: str, password: str, address: str | None) -> str:
        """Check ``name``/``password`` with PostgreSQL; returns a session cookie or raises."""
        from cbir_pg.db.identifiers import ROLE_PATTERN

        if self.config.mode == "proxy":
            raise LoginRefused("this server takes its users from the proxy in front of it")
        name = (name or "").strip()
        keys = [f"addr:{address}"] + ([f"user:{name}"] if ROLE_PATTERN.fullmatch(name) else [])
        wait = self.limiter.blocked(keys)
        if wait > 0:
            raise TooManyFailures(
                f"too many failed logins: try again in {max(1, round(wait / 60))} minute(s)"
            )
        try:
            if not ROLE_PATTERN.fullmatch(name) or not password or len(password) > 1024:
                raise LoginRefused("wrong user name or password")
            oid = self._check_login(name, password)
        except LoginRefused:
            self.limiter.fail(keys)
            raise
        self.limiter.clear(f"user:{name}")
        return self.sessions.create(Actor(name, "password", name, address), oid)

    def login_with_token(self, token: str, address: str | None) -> str:
        """The one-time link: a session for the server owner; the token then stops working."""
        keys = [f"addr:{address}"]
        if self.limiter.blocked(keys) > 0:
            raise TooManyFailures("too many failed logins: try again later")
        with self._token_lock:
            ok = (
                self.config.mode == "local"
                and self._token is not None
                and isinstance(token, str)
                and hmac.compare_digest(token.encode(), self._token.encode())
            )
            if ok:
                self._token = None
        if not ok:
            self.limiter.fail(keys)
            raise LoginRefused("this login link is not valid (it works once): log in with a database role")
        return self.sessions.create(Actor(OWNER, "token", None, address))

    def logout(self, cookie: str | None) -> None:
        self.sessions.end(cookie)

    # ------------------------------------------------------------------ resolving
    def resolve(self, request: Request) -> Actor:
        """The actor of ``request`` or :class:`NotAuthenticated`."""
        address = request.client.host if request.client else None
        if self.config.mode == "proxy":
            return self._from_proxy(request, address)
        cookie = request.cookies.get(COOKIE)
        s = self.sessions.get(cookie)
        if s is None:
            raise NotAuthenticated("log in first")
        if s.actor.role is not None and self._role_oid(s.actor.role) != s.role_oid:
            # the role was dropped (or dropped and re-created: another person), or left cbir_reader
            self.sessions.end_all(s.actor.name)
            raise NotAuthenticated("your login is no longer valid: log in again")
        return s.actor

    def checks_a_role(self, request: Request) -> bool:
        """Whether :meth:`resolve` asks the database (a person's role, or the proxy's user name): it then
        runs in a worker thread, and the owner's session is resolved on the event loop."""
        if self.config.mode == "proxy":
            return True
        s = self.sessions.get(request.cookies.get(COOKIE))
        return s is not None and s.actor.role is not None

    def _from_proxy(self, request: Request, address: str | None) -> Actor:
        from cbir_pg.db.identifiers import ROLE_PATTERN

        try:
            ip = ipaddress.ip_address(address or "")
        except ValueError:
            ip = None
        if ip is None or not any(ip in net for net in self.config.trusted_proxies):
            raise NotAuthenticated("requests must come through the authenticating proxy")
        name = (request.headers.get(self.config.proxy_header) or "").strip()
        if not ROLE_PATTERN.fullmatch(name) or self._role_oid(name) is None:
            raise NotAuthenticated("the proxy sent no user name that is a reader of this database")
        return Actor(name, "proxy", name, address)


async def current_actor(request: Request) -> Actor:
    """The FastAPI dependency every page and API route takes: ``actor: Actor = Depends(current_actor)``.

    Resolves the request's actor once (session cookie, or the proxy header from a trusted address) and
    records it on ``request.state.actor`` for the audit; raises :class:`NotAuthenticated` (401 on the API,
    a redirect to ``/login`` on pages) when there is none."""
    from starlette.concurrency import run_in_threadpool

    gate = request.app.state.gate
    actor = (
        await run_in_threadpool(gate.resolve, request)
        if gate.checks_a_role(request)
        else gate.resolve(request)
    )
    request.state.actor = actor
    return actor


def allowed_hosts(host: str, extra: Iterable[str] = ()) -> tuple[str, ...]:
    """The Host header values the server answers: the loopback names, the address it listens on (unless
    it is a wildcard) and ``--allowed-host`` names."""
    names = list(LOOPBACK_HOSTS)
    if host not in ("0.0.0.0", "::", ""):
        names.append(f"[{host}]" if ":" in host and not host.startswith("[") else host)
    for e in extra:
        e = e.strip().lower()
        if e:
            names.append(f"[{e}]" if ":" in e and not e.startswith("[") else e)
    return tuple(dict.fromkeys(n.lower() for n in names))
