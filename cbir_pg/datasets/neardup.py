"""Near duplicates that survive resizing: 64-bit perceptual hashes within a Hamming distance.

``image.phash`` is ImageHash's pHash (64 bits, hex) of the greyscale image. The same scan stored at
another size, re-encoded or slightly cropped keeps a pHash a few bits away, while the exact rule
(identical pixels) and the old rule (identical pHash) miss it. The threshold
:data:`DEFAULT_THRESHOLD` was chosen by measurement on MedMNIST and on a resized, re-encoded and
cropped copy of it (``python -m bench.neardup``, docs/datasets.md).

**The index: multi-index hashing** (Norouzi, Punjani & Fleet, "Fast exact search in Hamming space with
multi-index hashing", TPAMI 2014). The 64 bits are cut into ``m = t + 1`` disjoint chunks; by the
pigeonhole principle two hashes within distance ``t`` agree exactly on at least one chunk. So per chunk
the hashes are sorted by that chunk's value, each run of equal values is a bucket, and only pairs inside
a bucket are candidates; each candidate's full distance is one XOR and popcount. For ``n`` hashes the
work is ``m`` sorts plus the candidates, about ``m * n^2 / 2^(64/m)`` for spread-out hashes (1 M hashes
at t = 6: 7 chunks of 9-10 bits, about 0.5-1 G candidate checks in vectorised blocks; ``bench/neardup.py``
measures it). A pair found in several chunks is kept once. Everything is NumPy, no per-pair Python.

:func:`pairs_brute` is the all-pairs reference the tests compare against.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: pairs with Hamming distance <= this are near duplicates (measured: docs/datasets.md)
DEFAULT_THRESHOLD = 6
#: the most bits a threshold may allow (beyond it pHash no longer tells near from similar)
MAX_THRESHOLD = 16
#: candidate pairs checked per vectorised block
_BLOCK = 4_000_000


def parse_hashes(hexes: list[str]) -> np.ndarray:
    """Hex pHashes (16 hex digits) as ``uint64``."""
    return np.array([int(h, 16) for h in hexes], dtype=np.uint64)


def popcount64(x: np.ndarray) -> np.ndarray:
    """Bits set in each ``uint64``."""
    x = np.asarray(x, dtype=np.uint64)
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(x).astype(np.int64)
    b = x.view(np.uint8).reshape(*x.shape, 8)
    return np.unpackbits(b, axis=-1).sum(axis=(-1)).astype(np.int64)


def _chunks(t: int) -> list[tuple[int, int]]:
    """``t + 1`` disjoint (shift, width) bit ranges covering the 64 bits as evenly as possible."""
    m = t + 1
    widths = [64 // m + (1 if i < 64 % m else 0) for i in range(m)]
    out, shift = [], 0
    for w in widths:
        out.append((shift, w))
        shift += w
    return out


def check_threshold(t: int) -> int:
    from cbir_pg.errors import ConfigError

    if not 0 <= int(t) <= MAX_THRESHOLD:
        raise ConfigError(f"near-duplicate threshold must be 0..{MAX_THRESHOLD} bits, got {t}")
    return int(t)


def hamming_pairs(
    hashes: np.ndarray, threshold: int = DEFAULT_THRESHOLD
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every pair ``(i, j)``, ``i < j``, of positions in ``hashes`` whose Hamming distance is at most
    ``threshold``, with that distance; sorted by ``(i, j)``. Multi-index hashing (module docstring)."""
    t = check_threshold(threshold)
    h = np.asarray(hashes, dtype=np.uint64)
    n = len(h)
    found_i: list[np.ndarray] = []
    found_j: list[np.ndarray] = []
    if n < 2:
        e = np.zeros(0, dtype=np.int64)
        return e, e.copy(), e.copy()
    for shift, width in _chunks(t):
        key = (h >> np.uint64(shift)) & np.uint64((1 << width) - 1)
        order = np.argsort(key, kind="stable")
        ks = key[order]
        starts = np.flatnonzero(np.r_[True, ks[1:] != ks[:-1]])
        sizes = np.diff(np.r_[starts, n])
        multi = sizes > 1
        # for each bucket of size s, every (a, b) with a < b inside it; grouped by size so each group is
        # one vectorised outer product
        for s in np.unique(sizes[multi]):
            bstarts = starts[sizes == s]
            a, b = np.triu_indices(int(s), k=1)
            per = max(1, _BLOCK // len(a))
            for k in range(0, len(bstarts), per):
                base = bstarts[k : k + per, None]
                ii, jj = order[base + a[None, :]].ravel(), order[base + b[None, :]].ravel()
                d = popcount64(h[ii] ^ h[jj])
                ok = d <= t
                lo, hi = np.minimum(ii[ok], jj[ok]), np.maximum(ii[ok], jj[ok])
                found_i.append(lo)
                found_j.append(hi)
    if not found_i:
        e = np.zeros(0, dtype=np.int64)
        return e, e.copy(), e.copy()
    pair = np.unique(np.concatenate(found_i).astype(np.int64) * n + np.concatenate(found_j).astype(np.int64))
    i, j = pair // n, pair % n
    return i, j, popcount64(h[i] ^ h[j])


def pairs_brute(hashes: np.ndarray, threshold: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All pairs within ``threshold`` by comparing every pair (the reference for tests; O(n^2))."""
    h = np.asarray(hashes, dtype=np.uint64)
    i, j = np.triu_indices(len(h), k=1)
    d = popcount64(h[i] ^ h[j])
    ok = d <= threshold
    return i[ok].astype(np.int64), j[ok].astype(np.int64), d[ok]


@dataclass(frozen=True)
class NearPair:
    """Two images whose pHashes lie within the threshold, in different splits."""

    dataset: str
    image_a: int
    uri_a: str
    split_a: str
    image_b: int
    uri_b: str
    split_b: str
    distance: int


SPLIT_RANK = {"test": 0, "val": 1, "train": 2}


def keep_first(order_keys: list[tuple], i: np.ndarray, j: np.ndarray) -> dict[int, int]:
    """Greedy flagging in keep order (held-out split first, then uri): walking the images in that order,
    an image is flagged when a near neighbour earlier in the order was kept. Returns ``{flagged
    position: kept position}``; deterministic, independent of insertion order."""
    rank = sorted(range(len(order_keys)), key=lambda p: order_keys[p])
    pos = np.empty(len(order_keys), dtype=np.int64)
    pos[rank] = np.arange(len(rank))
    earlier: dict[int, list[int]] = {}
    for a, b in zip(i.tolist(), j.tolist(), strict=True):
        first, later = (a, b) if pos[a] < pos[b] else (b, a)
        earlier.setdefault(later, []).append(first)
    flagged: dict[int, int] = {}
    for p in rank:
        cands = [q for q in earlier.get(p, ()) if q not in flagged]
        if cands:
            flagged[p] = min(cands, key=lambda q: pos[q])
    return flagged
