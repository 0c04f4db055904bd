"""Binary COPY of a batch of vectors into ``cbir.embedding_<key>``.

The whole ``COPY ... (FORMAT BINARY)`` stream (header, one row per vector, trailer) is packed by numpy
in one go and sent with one ``write``: no Python call per row. That matters in ingest, where COPY runs in
a writer thread beside the thread that drives the model: per-row ``write_row`` holds the GIL for
thousands of small calls per batch and starves the model thread's kernel launches.

Row layout (PostgreSQL binary COPY, big-endian): int16 field count, then each field as int32 length +
bytes; ``bigint`` is 8 bytes; pgvector's ``vector``/``halfvec`` binary form is int16 dim, int16 unused,
then float32/float16 values.
"""

from __future__ import annotations

import struct

import numpy as np
import psycopg

from cbir_pg.db import identifiers, queries

_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0)
_TRAILER = struct.pack("!h", -1)


def pack_binary_copy(ids, vectors: np.ndarray, vector_type: str = "vector") -> bytes:
    """The binary COPY stream of ``(image_id bigint, embedding vector|halfvec)`` rows."""
    n, dim = vectors.shape
    width = 2 if vector_type == "halfvec" else 4
    row = np.dtype(
        [
            ("nfields", ">i2"),
            ("len_id", ">i4"),
            ("id", ">i8"),
            ("len_vec", ">i4"),
            ("dim", ">i2"),
            ("unused", ">i2"),
            ("vec", ">f2" if width == 2 else ">f4", (dim,)),
        ]
    )
    buf = np.empty(n, dtype=row)
    buf["nfields"] = 2
    buf["len_id"] = 8
    buf["id"] = np.asarray(ids, dtype=np.int64)
    buf["len_vec"] = 4 + width * dim
    buf["dim"] = dim
    buf["unused"] = 0
    buf["vec"] = vectors
    return _HEADER + buf.tobytes() + _TRAILER


def copy_vectors(
    conn: psycopg.Connection, key: str, ids: list[int], vectors: np.ndarray, vector_type: str = "vector"
) -> int:
    """``COPY cbir.embedding_<key> (image_id, embedding) FROM STDIN (FORMAT BINARY)``; returns rows written.
    Runs in ``conn``'s current transaction (the one holding the claim)."""
    if len(ids) != len(vectors):
        raise ValueError(f"{len(ids)} ids but {len(vectors)} vectors")
    if not ids:
        return 0
    q = queries.get("ingest", "copy_vectors", table=identifiers.embedding_table(key))
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if vectors.ndim != 2:
        raise ValueError(f"expected a 2-d array of vectors, got shape {vectors.shape}")
    payload = pack_binary_copy(ids, vectors, vector_type)
    with conn.cursor() as cur, cur.copy(q) as cp:
        cp.write(payload)
    return len(ids)
