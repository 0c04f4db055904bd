"""Logging setup: the library logs through standard :mod:`logging` (loggers under ``cbir_pg``, e.g.
``cbir_pg.ingest.worker`` one line per batch); the CLI and the ingest worker processes call
:func:`configure_logging` once."""

from __future__ import annotations

import sys


def configure_logging(verbose: bool = False, default: str = "WARNING") -> None:
    """Standard ``logging`` for the ``cbir_pg`` loggers on stderr, one line per record with time, level
    and logger (what ``docker compose logs`` shows). Level: ``CBIR_PG_LOG_LEVEL`` (e.g. ``INFO`` for the
    ingest worker's per-batch lines), else ``DEBUG`` with ``--verbose``, else ``default`` (``WARNING``;
    ``cbir-pg serve`` uses ``INFO``, so its log says when it loads a model)."""
    import logging
    import os

    level = os.environ.get("CBIR_PG_LOG_LEVEL") or ("DEBUG" if verbose else default)
    logger = logging.getLogger("cbir_pg")
    if not any(getattr(h, "_cbir_pg", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handler._cbir_pg = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    logger.setLevel(level.upper())
