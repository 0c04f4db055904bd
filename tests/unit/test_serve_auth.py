"""The pure parts of `cbir-pg serve`'s authentication: the one permission function, signed session
cookies with idle and absolute expiry, the failed-login window, the allowed host names."""

from __future__ import annotations

import pytest

from cbir_pg.app.serve.auth import (
    ACTIONS,
    Actor,
    AuthConfig,
    FailureLimiter,
    Sessions,
    allowed_hosts,
    may,
)
from cbir_pg.errors import ConfigError

ALICE = Actor("alice", "password", "alice", "10.0.0.1")
OWNER = Actor("owner", "token", None)


def test_may_is_the_one_permission_question() -> None:
    assert all(may(OWNER, a) for a in ACTIONS)
    assert {a for a in ACTIONS if may(ALICE, a)} == ACTIONS - {"report_figures"}
    assert not any(may(None, a) for a in ACTIONS)
    with pytest.raises(ValueError, match="unknown action"):
        may(ALICE, "drop_everything")


def test_session_cookies_are_signed_and_expire() -> None:
    now = [0.0]
    s = Sessions(idle_s=10, max_age_s=25, clock=lambda: now[0])
    cookie = s.create(ALICE, 42)
    sid, sig = cookie.rsplit(".", 1)
    assert s.get(cookie).actor == ALICE and s.get(cookie).role_oid == 42
    assert s.get(f"{sid}.{'0' * len(sig)}") is None and s.get(sid) is None and s.get(None) is None
    assert Sessions(10, 25).get(cookie) is None  # another server's key
    now[0] = 9
    assert s.get(cookie) is not None
    now[0] = 18  # 9 s idle: still alive
    assert s.get(cookie) is not None
    now[0] = 26  # past the absolute age, though never idle for 10 s
    assert s.get(cookie) is None
    c2 = s.create(ALICE)
    now[0] = 37  # 11 s idle
    assert s.get(c2) is None
    c3, c4 = s.create(ALICE), s.create(OWNER)
    s.end(c3)
    assert s.get(c3) is None and s.get(c4) is not None
    c5 = s.create(ALICE)
    s.end_all("alice")
    assert s.get(c5) is None and s.get(c4) is not None


def test_failed_logins_are_counted_in_a_sliding_window() -> None:
    now = [0.0]
    lim = FailureLimiter(max_failures=3, window_s=100, clock=lambda: now[0])
    keys = ["user:alice", "addr:10.0.0.1"]
    for t in (0, 10, 20):
        now[0] = t
        assert lim.blocked(keys) == 0
        lim.fail(keys)
    assert lim.blocked(["user:alice"]) == pytest.approx(80)
    assert lim.blocked(["addr:10.0.0.1", "user:bob"]) == pytest.approx(80)
    assert lim.blocked(["user:bob", "addr:10.0.0.2"]) == 0
    now[0] = 101  # the first failure left the window
    assert lim.blocked(keys) == 0
    lim.fail(keys)
    assert lim.blocked(keys) > 0
    lim.clear("user:alice")
    assert lim.blocked(["user:alice"]) == 0 and lim.blocked(["addr:10.0.0.1"]) > 0


def test_allowed_hosts() -> None:
    assert allowed_hosts("127.0.0.1") == ("localhost", "127.0.0.1", "[::1]")
    assert allowed_hosts("0.0.0.0", ["CBIR.example", " "]) == (
        "localhost",
        "127.0.0.1",
        "[::1]",
        "cbir.example",
    )
    assert allowed_hosts("::1") == ("localhost", "127.0.0.1", "[::1]")
    assert allowed_hosts("10.0.0.7", ["fe80::1"])[-2:] == ("10.0.0.7", "[fe80::1]")


def test_auth_config_is_checked() -> None:
    with pytest.raises(ConfigError, match="unknown --auth"):
        AuthConfig(mode="none")
    with pytest.raises(ConfigError, match="--trusted-proxy"):
        AuthConfig(mode="proxy")
    with pytest.raises(ConfigError, match="not an address"):
        AuthConfig(mode="proxy", trusted_proxies=("proxy.example",))
    cfg = AuthConfig(mode="proxy", trusted_proxies=("10.0.0.0/24", "::1"))
    assert [str(n) for n in cfg.trusted_proxies] == ["10.0.0.0/24", "::1/128"]
