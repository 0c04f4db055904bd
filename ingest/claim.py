"""Claiming work: a batch of images without a vector for the encoder, locked for one transaction.

How the locking works
---------------------
``claim_batch`` runs ``SELECT ... FROM cbir.image ... WHERE NOT EXISTS (vector) ... ORDER BY id LIMIT n
FOR NO KEY UPDATE OF i SKIP LOCKED`` in a transaction that stays open until the batch's vectors are
written with COPY and committed (:mod:`cbir_pg.ingest.worker`).

- The row locks make the claim exclusive: a concurrent claim (any process, any machine) skips rows
  another open transaction holds (``SKIP LOCKED``) instead of waiting, so workers never take the same
  image and never block one another.
- ``NO KEY UPDATE`` is the weakest exclusive row lock. It does not conflict with the ``KEY SHARE`` lock
  that foreign-key checks take, so other encoders writing vectors for the same images are not blocked
  (their claims do skip these rows until we commit, and pick them up in a later batch).
- A crash (SIGKILL, lost connection, OOM) ends the transaction: PostgreSQL rolls it back and drops the
  locks, so the batch is claimable again and nothing of it was written. There is no lease to expire.
- The race the locks alone do not close: worker B's claim may start from a snapshot taken before worker
  A commits a batch; once A commits and unlocks, B can lock those rows although they now have vectors.
  Because B got the lock only after A's commit, a second statement in B's transaction (a fresh snapshot
  under READ COMMITTED) sees A's vectors; ``claim_batch`` drops such images before returning. So every
  image is written exactly once and the primary key never has to reject a duplicate.
- Images whose failures reached ``max_attempts`` (``cbir.ingest_failure``) are not claimed again.

Privileges: ``FOR NO KEY UPDATE`` needs UPDATE on at least one column of ``cbir.image``; role
``cbir_worker`` gets it on ``created_at`` only (``sql/schema/30_ingest.sql``).

Keyset claims: a process claims ``i.id > after``, the highest id it has claimed so far
(:class:`ingest.worker._Claimer`), so while its own batches are in flight a claim does not walk past and
lock-check their rows (``SKIP LOCKED`` visits every locked row before the ``LIMIT`` is reached). When
that finds nothing, one claim from the start (``after = 0``) picks up what was skipped: other workers'
rolled-back batches and retries of failed images.

A separate claim/queue table was not needed at this size: the ``NOT EXISTS`` anti-join is a primary-key
lookup per image, and claiming is a small fraction of each batch's time next to decoding and the model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg.rows import dict_row

from cbir_pg.db import identifiers, queries


@dataclass(frozen=True)
class ClaimItem:
    image_id: int
    path: str
    #: the pixel hash recorded at import (``cbir.image.content_hash``); the decoded file must match it
    content_hash: str | None = None


@dataclass
class ClaimedBatch:
    """Images locked by ``conn``'s open transaction; commit or roll back ``conn`` to release them."""

    conn: psycopg.Connection
    items: list[ClaimItem] = field(default_factory=list)
    skipped_done: int = 0

    @property
    def ids(self) -> list[int]:
        return [it.image_id for it in self.items]


@dataclass(frozen=True)
class ClaimFilter:
    encoder: str
    datasets: list[str] | None = None
    splits: list[str] | None = None
    max_attempts: int = 3

    def params(self) -> dict:
        return {
            "encoder": self.encoder,
            "datasets": self.datasets,
            "splits": self.splits,
            "max_attempts": self.max_attempts,
        }


def image_path(root: str, uri: str) -> str:
    """The file of an image: its dataset root as this machine sees it (``CBIR_PG_DATA_ROOT``) / uri."""
    from cbir_pg.roots import local_root

    root = local_root(root)
    return str(Path(root) / uri) if root else uri


def claim_batch(conn: psycopg.Connection, flt: ClaimFilter, batch_size: int, after: int = 0) -> ClaimedBatch:
    """Lock up to ``batch_size`` unembedded images with ids above ``after`` in ``conn``'s transaction
    (left open; see the module docstring for the locking). Returns an empty batch when nothing is
    claimable right now."""
    table = identifiers.embedding_table(flt.encoder)
    cur = conn.cursor(row_factory=dict_row)
    rows = cur.execute(
        queries.get("ingest", "claim", table=table), {**flt.params(), "batch": batch_size, "after": after}
    ).fetchall()
    if not rows:
        return ClaimedBatch(conn, [])
    ids = [r["id"] for r in rows]
    done = {
        r["image_id"] for r in cur.execute(queries.get("ingest", "already_done", table=table), {"ids": ids})
    }
    items = [
        ClaimItem(r["id"], image_path(r["root"], r["uri"]), r["content_hash"])
        for r in rows
        if r["id"] not in done
    ]
    return ClaimedBatch(conn, items, skipped_done=len(done))
