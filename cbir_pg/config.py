"""Settings read from the environment, in one place.

| variable | meaning | default |
|---|---|---|
| ``CBIR_PG_DSN`` | libpq DSN of an external PostgreSQL with pgvector | unset: use the embedded server |
| ``CBIR_PG_HOME`` | data directory of the embedded server, caches, managed image roots | platform user-data dir |
| ``CBIR_PG_DATA_DIR`` | folder holding the MedMNIST ``.npz`` files for the demo and tests | unset |
| ``CBIR_PG_DB`` | database name on the embedded server | ``cbir`` |
| ``CBIR_PG_SALT`` | salt for hashing patient ids (kept out of the database; at least 32 characters) | unset: ``cbir.installation`` |
| ``CBIR_PG_SALT_FILE`` | a file whose first line is that salt | unset |
| ``CBIR_PG_LOG_LEVEL`` | level of the ``cbir_pg`` loggers on stderr (``INFO``: a line per ingest batch) | ``WARNING`` |
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


def _default_home() -> Path:
    import platformdirs

    return Path(platformdirs.user_data_dir("cbir-pg", appauthor=False))


@dataclass(frozen=True)
class Settings:
    home: Path
    dsn: str | None
    data_dir: Path | None
    database: str = "cbir"

    @property
    def pgdata(self) -> Path:
        return self.home / "pgdata"

    @property
    def image_root(self) -> Path:
        """Where adapters that materialise images (e.g. MedMNIST ``.npz`` → PNG) write them."""
        return self.home / "images"

    @property
    def cache_dir(self) -> Path:
        return self.home / "cache"


def get_settings(dsn: str | None = None) -> Settings:
    """Settings from the environment; an explicit ``dsn`` wins over ``CBIR_PG_DSN``."""
    home = (
        Path(os.environ["CBIR_PG_HOME"]).expanduser() if os.environ.get("CBIR_PG_HOME") else _default_home()
    )
    data_dir = os.environ.get("CBIR_PG_DATA_DIR")
    return Settings(
        home=home,
        dsn=dsn or os.environ.get("CBIR_PG_DSN") or None,
        data_dir=Path(data_dir).expanduser() if data_dir else None,
        database=os.environ.get("CBIR_PG_DB", "cbir"),
    )
