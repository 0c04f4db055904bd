"""``cbir-pg ingest --follow``: embed new images as they arrive, as a long-running service.

A follower registers a row in ``cbir.ingest_follower`` and then loops:

1. for each of its models, embed everything pending (:func:`cbir_pg.ingest.worker.run_ingest`, one
   process, the model loaded once for the follower's life; claims are the usual ``SKIP LOCKED`` batches,
   so several followers and one-off ``cbir-pg ingest`` runs share the work);
2. refresh its heartbeat (``heartbeat_at``, ``embedded``, ``last_batch_at``);
3. wait on ``LISTEN cbir_new_images`` (the trigger ``image_notify_new`` fires once per statement that
   inserts images: every import batch, the listener) for at most ``poll_interval`` seconds. Timing out is
   the polling fallback: a notification lost while the follower was busy or reconnecting only delays the
   next pass to the poll, it never loses an image, since a pass claims whatever has no vector.

``stop`` (an event the CLI sets on SIGTERM or SIGINT) is checked after every batch and every second of
the wait: the batch in hand is written and committed, batches claimed ahead are rolled back, the row is
marked ``stopped`` and the function returns normally. New vectors are searchable as soon as their batch
commits: the HNSW index is updated by the insert itself, nothing is rebuilt.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from cbir_pg.db import queries
from cbir_pg.db.database import Database

#: logger ``cbir_pg.ingest.follow``: one INFO line per pass that embedded something
log = logging.getLogger(__name__)

CHANNEL = "cbir_new_images"


@dataclass
class FollowSummary:
    follower_id: int
    models: list[str]
    passes: int = 0
    embedded: dict[str, int] = field(default_factory=dict)
    notifications: int = 0
    seconds: float = 0.0


def _wait(conn, stop: threading.Event, timeout: float) -> int:
    """Wait for notifications on ``conn`` (LISTENing) up to ``timeout`` seconds or until ``stop``;
    returns how many arrived."""
    deadline = time.monotonic() + timeout
    got = 0
    while not stop.is_set():
        left = deadline - time.monotonic()
        if left <= 0:
            break
        for _ in conn.notifies(timeout=min(1.0, left), stop_after=1):
            got += 1
        if got:
            # drain what else is queued without waiting, then go embed
            for _ in conn.notifies(timeout=0.05):
                got += 1
            break
    return got


def _register(db: Database, models: list[str], datasets: list[str] | None) -> int:
    """A new follower row (host, pid, models, datasets); its id."""
    with db.connection(autocommit=True) as conn:
        return conn.execute(
            queries.get("pacs", "follower_register"),
            {"host": socket.gethostname(), "pid": os.getpid(), "models": models, "datasets": datasets},
        ).fetchone()["id"]


def _one_pass(
    db: Database, summary: FollowSummary, stop: threading.Event, encoders: dict, load, **ingest: Any
) -> None:
    """Embed what is pending for each model in turn (its encoder loaded once, by ``load``), with a
    heartbeat after each; ends early once ``stop`` is set."""
    from cbir_pg.ingest.worker import run_ingest

    for m in summary.models:
        if stop.is_set():
            break
        if m not in encoders:
            encoders[m] = load(m)
        s = run_ingest(
            db, m, loader_workers=0, progress=False, encoder=encoders[m], stop=stop.is_set, **ingest
        )
        summary.embedded[m] += s.embedded
        if s.embedded:
            log.info("follower %d model=%s embedded=%d", summary.follower_id, m, s.embedded)
        _beat(db, summary.follower_id, s.embedded)


def follow(
    db: Database,
    models: list[str],
    *,
    datasets: list[str] | None = None,
    stop: threading.Event | None = None,
    poll_interval: float = 10.0,
    batch_size: int = 64,
    device: str = "auto",
    weights=None,
    pretrained: bool = True,
    max_attempts: int = 3,
    max_passes: int | None = None,
) -> FollowSummary:
    """Embed pending images for every model in ``models`` now and whenever new ones arrive, until
    ``stop`` is set (or after ``max_passes`` passes); see the module docstring."""
    from cbir_pg.encoders import create_encoder, resolve_device
    from cbir_pg.errors import ConfigError
    from cbir_pg.ingest.worker import encoder_config_for

    if not models:
        raise ConfigError("ingest --follow needs at least one --model")
    if poll_interval <= 0:
        raise ConfigError("--poll-interval must be > 0")
    stop = stop or threading.Event()
    started = time.monotonic()
    dev = resolve_device(device)
    for m in models:
        encoder_config_for(m, pretrained)  # an unknown key fails before anything is registered
    fid = _register(db, models, datasets)
    summary = FollowSummary(fid, list(models), embedded={m: 0 for m in models})
    encoders: dict = {}
    load = functools.partial(create_encoder, weights=weights, device=dev, pretrained=pretrained)
    ingest = dict(
        datasets=datasets, batch_size=batch_size, device=dev, pretrained=pretrained, max_attempts=max_attempts
    )
    listen = db.connect(autocommit=True)
    try:
        listen.execute(f"listen {CHANNEL}")
        while not stop.is_set():
            _one_pass(db, summary, stop, encoders, load, **ingest)
            summary.passes += 1
            if max_passes is not None and summary.passes >= max_passes:
                break
            _beat(db, fid, 0)
            summary.notifications += _wait(listen, stop, poll_interval)
    finally:
        listen.close()
        with db.connection(autocommit=True) as conn:
            conn.execute(queries.get("pacs", "follower_stop"), {"id": fid})
    summary.seconds = time.monotonic() - started
    return summary


def _beat(db: Database, fid: int, embedded: int) -> None:
    with db.connection(autocommit=True) as conn:
        conn.execute(queries.get("pacs", "follower_beat"), {"id": fid, "embedded": embedded})


@dataclass(frozen=True)
class FollowerRow:
    id: int
    host: str
    pid: int
    model: str
    state: str
    heartbeat_age_s: float
    embedded: int
    pending: int
    lag_s: float


def follower_status(db: Database, *, stale_after: float = 3600.0) -> list[FollowerRow]:
    """Followers (running, or stopped within ``stale_after`` seconds) per model: heartbeat age, images
    embedded, pending images and lag in seconds (view ``cbir.ingest_followers``)."""
    from psycopg.rows import class_row

    with db.connection() as conn, conn.cursor(row_factory=class_row(FollowerRow)) as cur:
        return cur.execute(queries.get("pacs", "follower_status"), {"stale": stale_after}).fetchall()
