"""Pure foundation logic: redaction, identifiers, named-query parsing, docker-compose wiring."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from psycopg import sql

from cbir_pg.db import identifiers, queries
from cbir_pg.db.connect import redact
from cbir_pg.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("raw", "secret"),
    [
        ("postgresql://u:pa55@h:5432/db", "pa55"),
        ("postgres://u:pa55@h/db?sslmode=require", "pa55"),
        ("postgresql+psycopg://u:pa55@h/db", "pa55"),
        ("host=h user=u password=pa55 dbname=d", "pa55"),
        ("host=h password = 'pa 55' dbname=d", "pa 55"),
        ("postgresql://u@h/db?password=pa55&sslmode=disable", "pa55"),
        ('connection to "postgresql://u:pa55@h/db" failed', "pa55"),
    ],
)
def test_redact_removes_passwords(raw: str, secret: str) -> None:
    out = redact(raw)
    assert secret not in out
    assert "***" in out


def test_redact_keeps_passwordless_dsn() -> None:
    assert redact("postgresql://postgres@/cbir?host=/tmp/x") == "postgresql://postgres@/cbir?host=/tmp/x"


@pytest.mark.parametrize(
    "bad", ["", "A", "1abc", "x;drop table cbir.image", "x'--", 'a"b', "a b", "a" * 41, "é"]
)
def test_hostile_keys_are_refused(bad: str) -> None:
    with pytest.raises(ConfigError):
        identifiers.check_key(bad)
    with pytest.raises(ConfigError):
        identifiers.embedding_table(bad)


def test_embedding_table_identifier_and_vector_type() -> None:
    assert identifiers.embedding_table("biomedclip") == sql.Identifier("cbir", "embedding_biomedclip")
    assert identifiers.vector_type_for(2000) == "vector"
    assert identifiers.vector_type_for(2001) == "halfvec"
    with pytest.raises(ConfigError):
        identifiers.create_embedding_table("ok", 0)


def test_named_query_parser() -> None:
    text = "-- name: one\nselect 1;\n\n-- name: two\nselect {table}.x from {table};\n"
    parsed = queries.parse(text)
    assert parsed == {"one": "select 1", "two": "select {table}.x from {table}"}
    with pytest.raises(ValueError):
        queries.parse("-- name: a\nselect 1;\n-- name: a\nselect 2;")


def test_docker_compose_services_and_dsn_wiring() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"db", "worker"} <= set(services)
    db = services["db"]
    assert db["image"].startswith("pgvector/pgvector")
    assert "healthcheck" in db and "pg_isready" in " ".join(db["healthcheck"]["test"])
    assert any(v.split(":")[0] == "pgdata" for v in db["volumes"])
    worker = services["worker"]
    dsn = worker["environment"]["CBIR_PG_DSN"]
    env = db["environment"]
    assert "@db:5432/" in dsn and dsn.endswith("/" + env["POSTGRES_DB"])
    # no password in the file: the worker reads it from the compose secret (PGPASSWORD)
    assert dsn.startswith(f"postgresql://{env['POSTGRES_USER']}@")
    assert worker["depends_on"]["db"]["condition"] == "service_healthy"
    assert "cbir-pg ingest" in " ".join(worker["command"])
    gpu = worker["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["driver"] == "nvidia" and "gpu" in gpu["capabilities"]
