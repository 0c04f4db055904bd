"""Multi-index hashing finds exactly the pairs an all-pairs comparison finds; the keep order is the
held-out split first, then the path."""

from __future__ import annotations

import numpy as np
import pytest

from cbir_pg.datasets.neardup import hamming_pairs, keep_first, pairs_brute, parse_hashes, popcount64
from cbir_pg.errors import ConfigError


def _hashes(n: int, planted: int, max_bits: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    h = rng.integers(0, 2**64 - 1, size=n, dtype=np.uint64, endpoint=True)
    # clustered hashes too (as real pHashes are): a few centres with small perturbations
    centres = h[:5].copy()
    for k in range(planted):
        x = centres[k % 5] if k % 2 else h[k]
        for b in rng.choice(64, size=int(rng.integers(0, max_bits + 1)), replace=False):
            x ^= np.uint64(1) << np.uint64(int(b))
        h[n - 1 - k] = x
    return h


@pytest.mark.parametrize("t", [0, 1, 3, 6, 9, 16])
def test_multi_index_hashing_equals_all_pairs(t):
    h = _hashes(1500, 300, 12, seed=t)
    got = hamming_pairs(h, t)
    ref = pairs_brute(h, t)
    assert len(ref[0]) > 0
    for a, b in zip(got, ref, strict=True):
        np.testing.assert_array_equal(a, b)


def test_popcount_and_parse():
    h = parse_hashes(["ffffffffffffffff", "0000000000000000", "8000000000000001"])
    assert popcount64(h).tolist() == [64, 0, 2]
    assert popcount64(h[0] ^ h[2]).tolist() == 62
    with pytest.raises(ConfigError, match="0..16"):
        hamming_pairs(h, 17)
    e = hamming_pairs(h[:1], 3)
    assert all(len(x) == 0 for x in e)


def test_keep_first_keeps_the_held_out_image_and_does_not_chain():
    # 0 (train, a) ~ 1 (test, b) ~ 2 (train, c); 0 and 2 are not near each other
    keys = [(2, "a"), (0, "b"), (2, "c")]
    flagged = keep_first(keys, np.array([0, 1]), np.array([1, 2]))
    assert flagged == {0: 1, 2: 1}
    # a chain: 0 ~ 1 ~ 2 with 0 kept first: 1 flagged, 2 kept (its only near neighbour was flagged)
    flagged = keep_first([(0, "a"), (1, "b"), (2, "c")], np.array([0, 1]), np.array([1, 2]))
    assert flagged == {1: 0}
