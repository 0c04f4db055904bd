"""cbir-pg: PostgreSQL-native content-based medical image retrieval.

Pipeline (one folder per step): datasets come in (:mod:`cbir_pg.datasets`), encoders embed them
(:mod:`cbir_pg.encoders`), the ingest workers store them (:mod:`ingest`), the HNSW index is built
(:mod:`cbir_pg.index`), then queries run (:mod:`cbir_pg.search`) and evaluation and reports are
produced (:mod:`eval`).

For notebooks and scripts (docs/python-api.md)::

    import cbir_pg
    db = cbir_pg.connect()                      # embedded server, or cbir_pg.connect("postgresql://...")
    db.search(123, "efficientnet_lite0", k=5)   # a pandas DataFrame
    db.evaluate("efficientnet_lite0"); db.leaderboard()

``import cbir_pg`` is cheap: the façade (:mod:`cbir_pg.api`) loads on first use, torch only when an
image has to be embedded.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

# search, evaluate and leaderboard are methods of the client that connect() returns (cbir_pg.search is
# the search module, so a module-level function of that name would be shadowed once it is imported).
__all__ = ["Client", "connect", "__version__"]


def __getattr__(name: str) -> Any:
    if name in ("Client", "connect"):
        from cbir_pg import api

        return getattr(api, name)
    raise AttributeError(f"module 'cbir_pg' has no attribute {name!r}")
