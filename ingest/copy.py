"""Binary COPY of a batch of vectors into ``cbir.embedding_<key>`` (pgvector types registered on the
connection by :func:`cbir_pg.db.connect.connect`)."""

from __future__ import annotations

import numpy as np
import psycopg

from cbir_pg.db import identifiers, queries


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
    if vector_type == "halfvec":
        from pgvector import HalfVector

        rows = ((int(i), HalfVector(v)) for i, v in zip(ids, vectors, strict=True))
    else:
        rows = ((int(i), v) for i, v in zip(ids, vectors, strict=True))
    with conn.cursor() as cur, cur.copy(q) as cp:
        cp.set_types(["int8", vector_type])
        for row in rows:
            cp.write_row(row)
    return len(ids)
