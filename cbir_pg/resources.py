"""Locate the SQL and alembic folders, installed or in a source checkout.

In a wheel they are packaged as ``cbir_pg/_resources/{sql,alembic}``; in an editable install or a
checkout they are the top-level ``sql/`` and ``alembic/`` folders beside the package.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from pathlib import Path


@cache
def resource_dir(name: str) -> Path:
    packaged = resources.files("cbir_pg") / "_resources" / name
    if packaged.is_dir():
        return Path(str(packaged))
    checkout = Path(__file__).resolve().parent.parent / name
    if checkout.is_dir():
        return checkout
    raise FileNotFoundError(f"cbir-pg resource folder {name!r} not found (broken install?)")


def sql_dir() -> Path:
    return resource_dir("sql")


def alembic_dir() -> Path:
    return resource_dir("alembic")
