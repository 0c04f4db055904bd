"""Shared rules, one home each. The SQL side reads the same values from ``sql/schema/10_rules.sql``
(``cbir.splits()``, ``cbir.max_vector_index_dim()``, ``cbir.index_name()``, ``cbir.max_ef_search()``);
``tests/db/test_rules.py`` checks that the two agree.
"""

from __future__ import annotations

from collections.abc import Iterable

from cbir_pg.errors import ConfigError

#: the split names (``cbir.image.split``'s check constraint, ``cbir.splits()``)
SPLITS: tuple[str, ...] = ("train", "val", "test")

#: pgvector's HNSW indexes ``vector`` up to 2,000 dims; above that a ``halfvec`` column or expression
MAX_VECTOR_INDEX_DIM = 2000
#: ... and ``halfvec`` up to 4,000 dims (beyond: binary quantisation only)
MAX_HALFVEC_INDEX_DIM = 4000

#: the HNSW index kinds per model table and their name pattern (``cbir.index_name()``)
INDEX_KINDS = ("hnsw", "hnsw_bq")
INDEX_NAME = "embedding_{key}_{kind}_idx"

#: ``hnsw.ef_search``: pgvector's default and its accepted range
DEFAULT_EF_SEARCH = 40
MIN_EF_SEARCH = 1
MAX_EF_SEARCH = 1000


def check_split(split: str, what: str = "split") -> str:
    if split not in SPLITS:
        raise ConfigError(f"invalid {what} {split!r}: use {', '.join(SPLITS)}")
    return split


def check_splits(splits: Iterable[str], what: str = "split") -> list[str]:
    """Every name must be a split; a clear error naming the bad ones."""
    out = list(splits)
    bad = [s for s in out if s not in SPLITS]
    if bad:
        raise ConfigError(f"unknown {what}(s) {', '.join(map(repr, bad))}: use {', '.join(SPLITS)}")
    return out


def check_ef_search(ef_search: int | None) -> int | None:
    """The one ``ef_search`` check (search, the evaluation runner, the CLI): ``None`` or 1..1000."""
    if ef_search is not None and not MIN_EF_SEARCH <= ef_search <= MAX_EF_SEARCH:
        raise ConfigError(f"ef_search must be between {MIN_EF_SEARCH} and {MAX_EF_SEARCH}, got {ef_search}")
    return ef_search
