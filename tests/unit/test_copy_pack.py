"""The numpy-packed binary COPY stream of ingest equals row-by-row packing with pgvector's own binary
form (``Vector.to_binary`` / ``HalfVector.to_binary``), for vector and halfvec columns."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from pgvector import HalfVector, Vector

from cbir_pg.ingest.copy import pack_binary_copy


@pytest.mark.parametrize("vector_type", ["vector", "halfvec"])
def test_packed_stream_equals_pgvector_rows(vector_type):
    rng = np.random.default_rng(3)
    v = rng.standard_normal((7, 33)).astype(np.float32)
    ids = [5, 9, 2**40 + 1, 11, 12, 13, 14]
    make = HalfVector if vector_type == "halfvec" else Vector
    expected = b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0)
    for i, row in zip(ids, v, strict=True):
        vec = make(row).to_binary()
        expected += struct.pack("!hiq", 2, 8, i) + struct.pack("!i", len(vec)) + vec
    expected += struct.pack("!h", -1)
    assert pack_binary_copy(ids, v, vector_type) == expected
