"""Near duplicates that survive resizing: 64-bit perceptual hashes within a Hamming distance.

``image.phash`` is ImageHash's pHash (64 bits, hex) of the greyscale image. The same scan stored at
another size, re-encoded or slightly cropped keeps a pHash a few bits away, while the exact rule
(identical pixels) and the old rule (identical pHash) miss it. The threshold
:data:`DEFAULT_THRESHOLD` was chosen by measurement on MedMNIST and on a resized, re-encoded and
cropped copy of it (``python -m bench.neardup``, docs/datasets.md).

**The index: multi-index hashing** (Norouzi, Punjani & Fleet, "Fast exact search in Hamming space with
multi-index hashing", TPAMI 2014). The 64 bits are cut into 4 chunks of 16 bits; by the pigeonhole
principle two hashes within distance ``t`` differ in at most ``r = t // 4`` bits in at least one chunk.
Per chunk the hashes are sorted by that chunk's value (the table); every hash probes its own chunk value
XOR each 16-bit mask of at most ``r`` bits (1 probe for t <= 3, 17 for t <= 7, 137 for t <= 11) with a
binary search, and only the hashes found there are candidates; each candidate's full distance is one
XOR and popcount. A pair found in several chunks is kept once. For ``n`` spread-out hashes there are
about ``4 * probes * n^2 / 2^16`` candidates (1 M hashes at t = 4: about 1 G, checked in vectorised
blocks; ``python -m bench.neardup`` measures it). Everything is NumPy, no per-pair Python.

:func:`pairs_brute` is the all-pairs reference the tests compare against.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: pairs with Hamming distance <= this are near duplicates (measured: docs/datasets.md)
DEFAULT_THRESHOLD = 4
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


#: the 64 bits are cut into this many 16-bit chunks (the multi-index)
CHUNKS = 4
CHUNK_BITS = 16


def check_threshold(t: int) -> int:
    from cbir_pg.errors import ConfigError

    if not 0 <= int(t) <= MAX_THRESHOLD:
        raise ConfigError(f"near-duplicate threshold must be 0..{MAX_THRESHOLD} bits, got {t}")
    return int(t)


def _probe_masks(radius: int) -> np.ndarray:
    """Every 16-bit mask with at most ``radius`` bits set (the substitutions probed in each chunk)."""
    from itertools import combinations

    masks = [0]
    for r in range(1, radius + 1):
        masks += [sum(1 << b for b in bits) for bits in combinations(range(CHUNK_BITS), r)]
    return np.array(masks, dtype=np.uint64)


def hamming_pairs(
    hashes: np.ndarray, threshold: int = DEFAULT_THRESHOLD
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every pair ``(i, j)``, ``i < j``, of positions in ``hashes`` whose Hamming distance is at most
    ``threshold``, with that distance; sorted by ``(i, j)``. Multi-index hashing (module docstring):
    4 chunks of 16 bits, each probed within radius ``threshold // 4``."""
    t = check_threshold(threshold)
    h = np.asarray(hashes, dtype=np.uint64)
    n = len(h)
    empty = np.zeros(0, dtype=np.int64)
    if n < 2:
        return empty, empty.copy(), empty.copy()
    masks = _probe_masks(t // CHUNKS)
    found: list[np.ndarray] = []
    idx = np.arange(n, dtype=np.int64)
    for c in range(CHUNKS):
        key = (h >> np.uint64(c * CHUNK_BITS)) & np.uint64((1 << CHUNK_BITS) - 1)
        order = np.argsort(key, kind="stable")
        ks = key[order]
        for mask in masks:
            probe = key ^ mask
            lo = np.searchsorted(ks, probe, side="left")
            cnt = np.searchsorted(ks, probe, side="right") - lo
            has = np.flatnonzero(cnt)
            if len(has) == 0:
                continue
            # expand (i, every j of its probed bucket) in blocks of about _BLOCK candidates
            csum = np.cumsum(cnt[has])
            start = 0
            while start < len(has):
                stop = int(np.searchsorted(csum, (csum[start - 1] if start else 0) + _BLOCK, side="right"))
                stop = max(stop, start + 1)
                sel = has[start:stop]
                c_sel = cnt[sel]
                ii = np.repeat(idx[sel], c_sel)
                offs = np.arange(int(c_sel.sum()), dtype=np.int64) - np.repeat(
                    np.cumsum(c_sel) - c_sel, c_sel
                )
                jj = order[np.repeat(lo[sel], c_sel) + offs]
                keep = ii < jj
                ii, jj = ii[keep], jj[keep]
                ok = popcount64(h[ii] ^ h[jj]) <= t
                found.append(ii[ok] * n + jj[ok])
                start = stop
    if not found:
        return empty, empty.copy(), empty.copy()
    pair = np.unique(np.concatenate(found))
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
