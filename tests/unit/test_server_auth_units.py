"""Pure parts of the embedded server's security (issue 13): ``--listen`` parsing, the generated
``pg_hba.conf``/``pg_ident.conf``, login DSNs, psql's passfile line."""

from __future__ import annotations

import pytest

from cbir_pg.db.database import Database
from cbir_pg.db.psql import _passfile_line, _split_password
from cbir_pg.db.roles import login_dsn
from cbir_pg.db.server import hba_conf, ident_conf, parse_listen
from cbir_pg.errors import ConfigError


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("5433", ("127.0.0.1", 5433)),
        (":5433", ("127.0.0.1", 5433)),
        ("0.0.0.0:5433", ("0.0.0.0", 5433)),
        ("db.local:6000", ("db.local", 6000)),
        ("[::1]:5433", ("::1", 5433)),
    ],
)
def test_parse_listen(text: str, expected: tuple[str, int]) -> None:
    assert parse_listen(text) == expected


@pytest.mark.parametrize("text", ["", "abc", "h:0", "h:70000", "[::1]5433", "a b:5433", "x';drop:5433"])
def test_parse_listen_refuses(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_listen(text)


def test_hba_has_no_trust_and_ident_maps_only_the_given_users() -> None:
    rules = [line.split() for line in hba_conf().splitlines() if line and not line.startswith("#")]
    assert all("trust" not in r for r in rules)
    assert rules[0] == ["local", "all", "postgres", "peer", "map=cbir_owner"]
    assert ["host", "all", "postgres", "all", "reject"] in rules
    maps = [line.split() for line in ident_conf(["root", "embedded_postgres", "root"]).splitlines()[1:]]
    assert maps == [["cbir_owner", "root", "postgres"], ["cbir_owner", "embedded_postgres", "postgres"]]


def test_login_dsn_forms() -> None:
    sock = "postgresql://postgres@/cbir?host=/run/cbir-pg/abc&port=5432"
    assert (
        login_dsn(Database(sock), "bi", "p@ss/w")
        == "postgresql://bi:p%40ss%2Fw@/cbir?host=/run/cbir-pg/abc&port=5432"
    )
    assert (
        login_dsn(Database(sock), "bi", "pw", ("127.0.0.1", 5433)) == "postgresql://bi:pw@127.0.0.1:5433/cbir"
    )
    assert (
        login_dsn(Database("host=db.example.org port=6432 dbname=x"), "bi", "pw")
        == "postgresql://bi:pw@db.example.org:6432/x"
    )


def test_split_password_and_passfile_escaping() -> None:
    conninfo, password = _split_password("postgresql://u:a%3Ab%5Cc@/cbir?host=/tmp")
    assert password == "a:b\\c" and "password" not in conninfo and "a:b" not in conninfo
    assert _passfile_line(password) == "*:*:*:*:a\\:b\\\\c\n"
    assert _split_password("host=/tmp dbname=cbir")[1] is None
