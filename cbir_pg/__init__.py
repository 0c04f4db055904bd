"""cbir-pg: PostgreSQL-native content-based medical image retrieval.

Pipeline (one folder per step): datasets come in (:mod:`cbir_pg.datasets`), encoders embed them
(:mod:`cbir_pg.encoders`), the ingest workers store them (:mod:`cbir_pg.ingest`), the HNSW index is
built (:mod:`cbir_pg.index`), then queries run (:mod:`cbir_pg.search`) and evaluation and reports are
produced (:mod:`cbir_pg.eval`). The command line and the demo are the app layer (:mod:`cbir_pg.app`).

Layering (checked by ``tests/unit/test_layering.py``): the core (``db``, ``datasets``, ``encoders``,
``images``, ``index``, ``search``, ...) imports neither ``ingest``, ``eval`` nor ``app``; ``ingest`` and
``eval`` import the core only; ``app`` imports all of them.

``ingest/`` and ``eval/`` are top-level folders of the repository but always imported as
``cbir_pg.ingest`` and ``cbir_pg.eval``: the wheel ships them inside ``cbir_pg/`` (see
``pyproject.toml``), and in a source checkout (editable install, or ``PYTHONPATH=<repo>``) the small
finder below maps the two names onto the folders beside this package.

For notebooks and scripts (docs/python-api.md)::

    import cbir_pg
    db = cbir_pg.connect()                      # embedded server, or cbir_pg.connect("postgresql://...")
    db.search(123, "efficientnet_lite0", k=5)   # a pandas DataFrame
    db.evaluate("efficientnet_lite0"); db.leaderboard()

``connect`` and ``Client`` are the app layer's façade (:mod:`cbir_pg.app.api`), re-exported here by
name only and loaded on first use, so ``import cbir_pg`` stays cheap and no core module depends on it.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

# search, evaluate and leaderboard are methods of the client that connect() returns (cbir_pg.search is
# the search module, so a module-level function of that name would be shadowed once it is imported).
__all__ = ["Client", "Cohort", "connect", "__version__"]


def __getattr__(name: str) -> Any:
    if name in ("Client", "connect"):
        import importlib

        return getattr(importlib.import_module("cbir_pg.app.api"), name)  # the app layer, by name
    if name == "Cohort":
        from cbir_pg.cohort import Cohort

        return Cohort
    raise AttributeError(f"module 'cbir_pg' has no attribute {name!r}")


def _map_checkout_subpackages() -> None:
    import importlib.abc
    import importlib.util
    import sys
    from pathlib import Path

    here = Path(__file__).resolve().parent
    repo = here.parent
    names = ("eval", "ingest")
    if all((here / n).is_dir() for n in names):  # installed wheel: the packages are inside cbir_pg/
        return
    if not (repo / "pyproject.toml").is_file() or not all(
        (repo / n / "__init__.py").is_file() for n in names
    ):
        return

    class _CheckoutFinder(importlib.abc.MetaPathFinder):
        """``cbir_pg.eval`` -> ``<repo>/eval``, ``cbir_pg.ingest`` -> ``<repo>/ingest`` (source checkout only)."""

        def find_spec(self, fullname, path=None, target=None):  # noqa: ANN001
            head, _, tail = fullname.partition(".")
            if head != __name__ or tail not in names:
                return None
            folder = repo / tail
            return importlib.util.spec_from_file_location(
                fullname, folder / "__init__.py", submodule_search_locations=[str(folder)]
            )

    if not any(type(f).__name__ == "_CheckoutFinder" for f in sys.meta_path):
        sys.meta_path.append(_CheckoutFinder())


_map_checkout_subpackages()
