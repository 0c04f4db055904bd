"""Shared rules, one home each. The SQL side reads the same values from ``sql/schema/10_rules.sql``
(``cbir.splits()``, ``cbir.max_vector_index_dim()``, ``cbir.index_name()``, ``cbir.max_ef_search()``);
``tests/db/test_rules.py`` checks that the two agree.
"""

from __future__ import annotations

from collections.abc import Iterable

from cbir_pg.errors import ConfigError

#: the words a yes/no option or environment variable says "yes" with (any case, spaces around ignored)
TRUE_WORDS: tuple[str, ...] = ("1", "true", "yes", "on")


def is_on(value: object) -> bool:
    """Whether an option's value (a string, a bool, None) says yes: one of :data:`TRUE_WORDS`."""
    return str(value if value is not None else "").strip().lower() in TRUE_WORDS


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

#: the evaluation's default ``hnsw.ef_search`` (ann mode, top-N with N <= EVAL_EF_TABLE_MAX_N), by the number
#: of vectors in the model's HNSW graph: rows ``(up to this many vectors, ef_search)``. Each value is the
#: smallest of the measured grid (40, 80, 160, 320) whose max |dP@N| (N = 1, 3, 5, 10, micro, against exact
#: search) stayed <= 0.002, non-decreasing with size: ``python -m bench.run --scale`` on 768-d clustered
#: vectors, product index (halfvec, m = 16, ef_construction = 64), bench/results/20261201T020528Z-scale-cpu.json
#: (index 10k, 30k, 100k, 200k + 2,000 query vectors in the graph); see docs/scaling.md. Above the last row,
#: and for N > 10, the measurement supports nothing and the default stays EF_PER_RESULT x N.
#: The table is a lower bound, never below EF_PER_RESULT x N: on real embeddings (MedMNIST, 5.8k images,
#: efficientnet_lite0, tests/db/test_real_medmnist.py) ef_search 40 gave recall@10 of only 0.954 against
#: exact search, while the synthetic clustered vectors of the curve reached |dP@N| <= 0.002 there, so
#: the curve alone is too optimistic for top-10; it lowers the default for small N (N = 1, 3, 5).
EVAL_EF_SEARCH_BY_VECTORS: tuple[tuple[int, int], ...] = (
    (12_000, 40),
    (32_000, 40),
    (102_000, 80),
    (202_000, 160),
)
EVAL_EF_TABLE_MAX_N = 10
#: the default outside the table: ``hnsw.ef_search`` per result row wanted (round 1: 16 N, 200k vectors)
EF_PER_RESULT = 16


def default_eval_ef_search(n: int, vectors: int) -> int:
    """The evaluation's default ``hnsw.ef_search`` for a top-``n`` over an HNSW graph of ``vectors`` rows:
    the first row of :data:`EVAL_EF_SEARCH_BY_VECTORS` that covers ``vectors`` when ``n`` <= 10 but at
    least ``16 n``, else (a larger graph or ``n``) ``max(40, 16 n)``; never below ``n``, never above 1,000."""
    if n <= EVAL_EF_TABLE_MAX_N:
        for upto, ef in EVAL_EF_SEARCH_BY_VECTORS:
            if vectors <= upto:
                return min(MAX_EF_SEARCH, max(ef, EF_PER_RESULT * n, n))
    return min(MAX_EF_SEARCH, max(DEFAULT_EF_SEARCH, EF_PER_RESULT * n, n))


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
