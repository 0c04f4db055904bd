"""``run_ingest``: fill ``cbir.embedding_<key>`` for one encoder, with one process or many.

Each batch is one transaction: claim (locks, :mod:`cbir_pg.ingest.claim`) → decode in DataLoader workers
(:mod:`cbir_pg.ingest.pipeline`) → forward pass → validate and L2-normalise → binary COPY (:mod:`cbir_pg.ingest.copy`)
and failure rows → commit. Killing a worker at any point loses at most its open batches, which
PostgreSQL rolls back and unlocks; a rerun (or any other worker) picks them up.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from cbir_pg.db import identifiers, queries
from cbir_pg.db.connect import translate
from cbir_pg.db.database import Database, db_errors, dict_cursor, scalar
from cbir_pg.encoders import Encoder, EncoderConfig, create_encoder, get_config, l2_normalise
from cbir_pg.errors import CbirError, ConfigError, ConnectionLostError
from cbir_pg.ingest.claim import ClaimedBatch, ClaimFilter, claim_batch
from cbir_pg.ingest.copy import copy_vectors
from cbir_pg.ingest.pipeline import (
    BatchPreprocessor,
    ClaimSampler,
    DecodeOptions,
    Failure,
    LoadedBatch,
    make_loader,
)
from cbir_pg.rules import check_splits

#: logger ``cbir_pg.ingest.worker``: one line per batch and per worker start/end (``CBIR_PG_LOG_LEVEL=INFO``)
log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16", "fp16")
HASH_COMMENT = "cbir-pg encoder {key} config_hash={hash}"


@dataclass
class IngestSummary:
    model: str
    config_hash: str
    device: str  # the device used; the one asked for (e.g. "auto") when there was nothing to embed
    processes: int
    embedded: int = 0  # vectors written by this run
    failed: int = 0  # failed attempts recorded by this run
    done: int = 0  # vectors stored for the selection after the run
    remaining: int = 0  # images of the selection still without a vector and below the retry limit
    seconds: float = 0.0
    batches: int = 0
    errors: dict[str, int] = field(default_factory=dict)

    @property
    def images_per_s(self) -> float:
        return self.embedded / self.seconds if self.seconds > 0 else 0.0

    def merge(self, other: IngestSummary) -> None:
        self.embedded += other.embedded
        self.failed += other.failed
        self.batches += other.batches
        for k, v in other.errors.items():
            self.errors[k] = self.errors.get(k, 0) + v


# --------------------------------------------------------------------------- encoder table and hash


def encoder_config_for(model: str, pretrained: bool = True) -> EncoderConfig:
    cfg = get_config(model)
    return cfg if pretrained else cfg.as_random()


def ensure_encoder_table(conn: psycopg.Connection, config: EncoderConfig, *, commit: bool = True) -> None:
    """Create ``cbir.embedding_<key>`` and its ``cbir.encoder`` row on first use (under an advisory lock,
    so concurrent workers do it once); refuse a different config hash with a clear error. With
    ``commit=False`` the caller's transaction keeps them (and the lock) until it commits or rolls back."""
    key, h = config.key, config.config_hash()
    table_name = identifiers.embedding_table_name(key)
    vtype = identifiers.vector_type_for(config.dim)
    from cbir_pg.db.locks import key_of, wait_for_lock

    wait_for_lock(conn, key_of(conn, "text_key", "cbir-pg ingest setup"), f"ingest --model {key}", xact=True)
    cur = dict_cursor(conn)
    row = cur.execute(queries.get("ingest", "encoder_get"), {"key": key}).fetchone()
    comment = cur.execute(
        queries.get("ingest", "table_comment"), {"regclass": f"cbir.{table_name}"}
    ).fetchone()
    stored = row["config_hash"] if row else None
    if stored is None and comment and comment["comment"] and "config_hash=" in comment["comment"]:
        stored = comment["comment"].rsplit("config_hash=", 1)[1].strip()
    if stored is not None and stored != h:
        conn.rollback()
        raise ConfigError(
            f"cbir.{table_name} holds vectors of encoder config {stored[:12]}, but {key} now has config"
            f" {h[:12]} (weights or preprocessing changed); vectors of different configs must not mix:"
            f" drop the table (cbir-pg models drop {key}, or DROP TABLE cbir.{table_name} CASCADE and delete"
            f" its cbir.encoder row) or register the new config under a new key"
        )
    table_exists = comment is not None and scalar(
        conn, "select to_regclass(%s) is not null", (f"cbir.{table_name}",)
    )
    if not table_exists:
        conn.execute(identifiers.create_embedding_table(key, config.dim))
        conn.execute(
            queries.get(
                "ingest",
                "comment_table",
                table=identifiers.embedding_table(key),
                comment=sql.Literal(HASH_COMMENT.format(key=key, hash=h)),
            )
        )
    if row is None:
        from psycopg.types.json import Jsonb

        conn.execute(
            queries.get("ingest", "encoder_insert"),
            {
                "key": key,
                "family": config.family,
                "dim": config.dim,
                "vector_type": vtype,
                "config": Jsonb(config.to_json()),
                "config_hash": h,
                "table_name": table_name,
            },
        )
    if commit:
        conn.commit()


def _check_selection(conn: psycopg.Connection, flt: ClaimFilter) -> None:
    if flt.datasets:
        unknown = [
            r["k"]
            for r in dict_cursor(conn).execute(
                queries.get("ingest", "unknown_datasets"), {"datasets": flt.datasets}
            )
        ]
        if unknown:
            from cbir_pg.datasets.catalog import unknown_datasets_error

            raise unknown_datasets_error(conn, unknown)
    check_splits(flt.splits or [])


def count_todo(conn: psycopg.Connection, flt: ClaimFilter) -> int:
    q = queries.get("ingest", "count_todo", table=identifiers.embedding_table(flt.encoder))
    return scalar(conn, q, flt.params())


def count_done(conn: psycopg.Connection, flt: ClaimFilter) -> int:
    q = queries.get("ingest", "count_done", table=identifiers.embedding_table(flt.encoder))
    return scalar(conn, q, flt.params())


# --------------------------------------------------------------------------- one batch


def _record_failures(conn: psycopg.Connection, key: str, failures: list[Failure]) -> None:
    for f in failures:
        msg = f.message[:2000]
        conn.execute(
            queries.get("ingest", "record_error"),
            {
                "stage": f.stage,
                "encoder": key,
                "source": f.source,
                "reason": f.reason,
                "message": msg,
                "image_id": f.image_id,
            },
        )
        conn.execute(
            queries.get("ingest", "record_failure"),
            {"encoder": key, "image_id": f.image_id, "error": f"{f.reason}: {msg}"[:2000]},
        )


def _autocast(device: str, precision: str):
    import contextlib

    import torch

    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type="cuda" if device.startswith("cuda") else "cpu", dtype=dtype)


@dataclass
class EncodedBatch:
    """A claimed batch after the forward pass: the raw embeddings are on their way to host memory
    (``ready`` is the CUDA event of that copy, or None) and are written by :func:`write_batch`."""

    batch: ClaimedBatch
    ok_ids: list[int]
    raw: Any  # torch tensor (n, dim) on the host, or None when nothing was encodable
    ready: Any
    failures: list[Failure]


def encode_batch(
    batch: ClaimedBatch, encoder: Encoder, loaded: LoadedBatch, prep: BatchPreprocessor, precision: str
) -> EncodedBatch:
    """Preprocess on the device and run the model for one claimed batch; on CUDA the result's copy to
    host memory is queued (non-blocking) and not waited for."""
    import torch

    if loaded.ids != batch.ids:
        raise RuntimeError("pipeline out of order: the decoded batch does not match the claimed batch")
    paths = {it.image_id: it.path for it in batch.items}
    ok_ids, x = prep(loaded, paths)
    failures = list(loaded.failures)
    if x is None:
        return EncodedBatch(batch, [], None, None, failures)
    with torch.inference_mode(), _autocast(encoder.device, precision):
        out = encoder.module(encoder.to_device(x))
    out = out.float()
    ready = None
    if out.is_cuda:
        host = torch.empty(out.shape, dtype=out.dtype, pin_memory=True)
        host.copy_(out, non_blocking=True)
        ready = torch.cuda.Event()
        ready.record()
        out = host
    return EncodedBatch(batch, ok_ids, out, ready, failures)


def write_batch(enc: EncodedBatch, config: EncoderConfig, summary: IngestSummary) -> int:
    """Validate and L2-normalise, binary COPY, record failures and commit one batch (its own
    connection and transaction); returns vectors written."""
    failures = enc.failures
    written = 0
    if enc.raw is not None:
        if enc.ready is not None:
            enc.ready.synchronize()
        raw = enc.raw.numpy()
        paths = {it.image_id: it.path for it in enc.batch.items}
        vecs, reasons = l2_normalise(raw, config.dim)
        keep = [i for i, r in enumerate(reasons) if r is None]
        for i, r in enumerate(reasons):
            if r is not None:
                got = raw.shape[1] if raw.ndim == 2 else raw.shape
                failures.append(
                    Failure(
                        enc.ok_ids[i],
                        "ingest",
                        f"invalid_embedding_{r}",
                        f"{config.key}: {r} vector (dim {got}, expected {config.dim})",
                        source=str(paths.get(enc.ok_ids[i]))
                        if paths.get(enc.ok_ids[i]) is not None
                        else None,
                    )
                )
        written = copy_vectors(
            enc.batch.conn,
            config.key,
            [enc.ok_ids[i] for i in keep],
            vecs[keep],
            identifiers.vector_type_for(config.dim),
        )
    _record_failures(enc.batch.conn, config.key, failures)
    enc.batch.conn.commit()
    summary.embedded += written
    summary.failed += len(failures)
    summary.batches += 1
    for f in failures:
        summary.errors[f.reason] = summary.errors.get(f.reason, 0) + 1
    log.info(
        "batch %d model=%s pid=%d claimed=%d embedded=%d failed=%d",
        summary.batches,
        config.key,
        os.getpid(),
        len(enc.batch.items),
        written,
        len(failures),
    )
    return written


class _Writer:
    """A thread that writes (COPY, failure rows, commit) finished batches while the main thread encodes
    the next one. Each batch keeps its own connection and transaction, so commit semantics are those of
    the serial loop: a batch is either committed whole or rolled back (and claimable again). The first
    error stops the writing; the batches still queued are rolled back and the error is raised in the
    main thread (:meth:`check`, :meth:`close`)."""

    def __init__(self, config: EncoderConfig, summary: IngestSummary, release, on_batch, depth: int = 2):
        import queue
        import threading

        self.config, self.summary, self.release, self.on_batch = config, summary, release, on_batch
        self.queue: queue.Queue = queue.Queue(maxsize=depth)
        self.error: BaseException | None = None
        self.closed = False
        self.thread = threading.Thread(target=self._loop, name="cbir-ingest-writer", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while True:
            enc = self.queue.get()
            if enc is None:
                return
            try:
                if self.error is None:
                    n = write_batch(enc, self.config, self.summary)
                    if self.on_batch:
                        self.on_batch(n, len(enc.batch.items) - n)
            except BaseException as exc:  # handed to the main thread
                self.error = exc
            finally:
                self.release(enc.batch)

    def check(self) -> None:
        if self.error is not None:
            exc, self.error = self.error, None
            if isinstance(exc, psycopg.Error):
                raise translate(exc) from None
            raise exc

    def put(self, enc: EncodedBatch) -> None:
        self.check()
        self.queue.put(enc)

    def close(self) -> None:
        """Wait until every queued batch is written (or rolled back after an error), then re-raise it."""
        if not self.closed:
            self.closed = True
            self.queue.put(None)
            self.thread.join()
        self.check()


# --------------------------------------------------------------------------- one process


class _Claimer:
    """Claims batches on a small pool of connections (one per open transaction). Keyset claims: ids
    above the highest this claimer took; when that finds nothing, one claim from the start."""

    def __init__(self, db: Database, flt: ClaimFilter, batch_size: int, limit: int | None):
        import threading

        self.db, self.flt, self.batch_size, self.limit = db, flt, batch_size, limit
        self.idle: list[psycopg.Connection] = []
        self.all: list[psycopg.Connection] = []
        self.claimed = 0
        self.after = 0
        self.exhausted = False
        self.lock = threading.Lock()  # the writer thread releases connections

    def _conn(self) -> psycopg.Connection:
        with self.lock:
            if self.idle:
                return self.idle.pop()
        c = self.db.connect()
        with self.lock:
            self.all.append(c)
        return c

    def release(self, batch: ClaimedBatch) -> None:
        try:
            if batch.conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                batch.conn.rollback()
        except psycopg.Error:  # a dead connection (server restart): drop it, the server rolled back
            import contextlib

            with contextlib.suppress(Exception):
                batch.conn.close()
            return
        with self.lock:
            self.idle.append(batch.conn)

    def __call__(self) -> ClaimedBatch | None:
        while not self.exhausted:
            n = self.batch_size if self.limit is None else min(self.batch_size, self.limit - self.claimed)
            if n <= 0:
                self.exhausted = True
                break
            conn = self._conn()
            try:
                with db_errors():
                    batch = claim_batch(conn, self.flt, n, self.after)
            except CbirError:
                self.release(ClaimedBatch(conn))
                raise
            if batch.items or batch.skipped_done:
                self.after = max([self.after, *(it.image_id for it in batch.items)])
            if batch.items:
                self.claimed += len(batch.items)
                return batch
            conn.rollback()
            with self.lock:
                self.idle.append(conn)
            if batch.skipped_done:  # every claimed row was done meanwhile: claim on
                continue
            if self.after:  # nothing above our keyset: once more from the start
                self.after = 0
                continue
            self.exhausted = True  # nothing claimable: the rest is done, failed or held by others
        return None

    def close(self) -> None:
        import contextlib

        for c in self.all:
            with contextlib.suppress(Exception):
                c.close()


def decode_options(encoder: Encoder, *, fast_decode: bool = False, jpeg_on_device: bool | None = None):
    """The loader workers' job for this encoder: resize on the device when it reproduces the config
    (:func:`cbir_pg.encoders.device_preprocess.device_resize_supported`); JPEGs decoded on the device by
    default on CUDA only."""
    from cbir_pg.encoders.device_preprocess import device_resize_supported

    if jpeg_on_device is None:
        jpeg_on_device = encoder.device.startswith("cuda")
    resize = device_resize_supported(encoder.config)
    return DecodeOptions(
        resize_on_device=resize, jpeg_on_device=bool(jpeg_on_device) and resize, fast_decode=fast_decode
    )


def _run_one(
    db: Database,
    encoder: Encoder,
    flt: ClaimFilter,
    *,
    batch_size: int,
    loader_workers: int,
    precision: str,
    limit: int | None,
    summary: IngestSummary,
    on_batch=None,
    fast_decode: bool = False,
    jpeg_on_device: bool | None = None,
    stop=None,
) -> None:
    """Passes over the claimable images until a pass claims nothing (failed images are retried in the
    next pass until ``max_attempts``). Per batch: the main thread preprocesses on the device and runs the
    model while the DataLoader decodes (and claims) the next batches and the writer thread COPYs and
    commits the previous one. ``stop()`` true (a follower's SIGTERM) ends the pass after the batch in
    hand: it is written and committed, batches claimed ahead are rolled back."""
    pin = encoder.device.startswith("cuda")
    options = decode_options(encoder, fast_decode=fast_decode, jpeg_on_device=jpeg_on_device)
    prep = BatchPreprocessor(encoder.config, encoder.device)
    while True:
        claimer = _Claimer(
            db, flt, batch_size, None if limit is None else limit - summary.embedded - summary.failed
        )
        sampler = ClaimSampler(claimer)
        writer = _Writer(encoder.config, summary, claimer.release, on_batch)
        try:
            loader = make_loader(
                encoder.config, sampler, workers=loader_workers, pin_memory=pin, options=options
            )
            for loaded in loader:
                batch = sampler.pending.popleft()
                try:
                    with db_errors():
                        enc = encode_batch(batch, encoder, loaded, prep, precision)
                except BaseException:
                    claimer.release(batch)
                    raise
                writer.put(enc)
                if stop is not None and stop():
                    break
            writer.close()
        finally:
            if not writer.closed:
                with contextlib.suppress(BaseException):
                    writer.close()
            while sampler.pending:  # claimed but not processed (an error or Ctrl-C): give the work back
                claimer.release(sampler.pending.popleft())
            claimer.close()
        if claimer.claimed == 0 or (limit is not None and summary.embedded + summary.failed >= limit):
            return
        if stop is not None and stop():
            return


@dataclass(frozen=True)
class LoopOptions:
    """How :func:`_run_one` embeds, the same in this process and in each spawned one."""

    batch_size: int
    loader_workers: int
    precision: str
    fast_decode: bool
    jpeg_on_device: bool | None


def _child(db: Database, model: str, kwargs: dict[str, Any], queue) -> None:
    """Entry point of a spawned worker process: the single-process loop, summary back on ``queue``."""
    from cbir_pg.logs import configure_logging

    configure_logging()  # a spawned process starts without the parent's logging setup
    try:
        s = run_ingest(db, model, processes=1, progress=False, **kwargs)
        queue.put(("ok", asdict(s)))
    except CbirError as exc:
        queue.put(("error", str(exc)))
    except BaseException as exc:  # report, then die
        queue.put(("error", f"{type(exc).__name__}: {exc}"))
        raise


def _progress_bar(total: int, enabled: bool, model: str):
    from cbir_pg.progress import progress_bar

    return progress_bar(total, f"ingest {model}", unit="img", enabled=enabled)


# one piece: its 20 keyword options are the public API, each documented; the body only checks them and
# hands them on to the steps (_prepare, _embed, _final_counts)
def run_ingest(
    db: Database,
    model: str,
    *,
    datasets: list[str] | None = None,
    splits: list[str] | None = None,
    batch_size: int = 64,
    device: str = "auto",
    loader_workers: int = 2,
    processes: int = 1,
    precision: str = "fp32",
    weights: str | os.PathLike | None = None,
    max_attempts: int = 3,
    progress: bool = True,
    limit: int | None = None,
    pretrained: bool = True,
    reconnect_timeout: float = 300.0,
    fast_decode: bool = False,
    jpeg_on_device: bool | None = None,
    encoder: Encoder | None = None,
    stop=None,
) -> IngestSummary:
    """Embed every claimable image of the selection with encoder ``model`` and store unit vectors.

    Safe to run any number of times and in any number of processes or machines at once: each image is
    written exactly once. ``pretrained=False`` uses seeded random weights (its own config hash).
    A lost connection (server restart) is retried with exponential back-off for up to
    ``reconnect_timeout`` seconds; open batches were rolled back by the server, so nothing is lost.

    ``fast_decode`` (opt-in) decodes JPEGs in PIL's draft mode (DCT-domain downscaling to near the
    model's input size): several times faster on large JPEGs, with slightly different pixels than the
    exact decoder. ``jpeg_on_device`` decodes JPEGs batched on the model's device (default: on CUDA).

    ``encoder``: an encoder already loaded (a follower keeps its model between passes); ``stop``: a
    callable checked after every batch (single process only): true ends the run after that batch."""
    _check_options(batch_size, loader_workers, processes, max_attempts, precision)
    config = encoder_config_for(model, pretrained)
    flt = ClaimFilter(
        model, list(datasets) if datasets else None, list(splits) if splits else None, max_attempts
    )
    todo = _prepare(db, flt, config)

    from cbir_pg.encoders import resolve_device

    # nothing to embed: no model is loaded, so torch is not even imported (a re-run stays fast)
    dev = resolve_device(device) if todo else device
    summary = IngestSummary(model=model, config_hash=config.config_hash(), device=dev, processes=processes)
    _log_start(summary, batch_size, todo)
    started = time.perf_counter()
    if todo:  # with nothing claimable the model is not loaded at all
        _embed(
            db,
            flt,
            summary,
            todo if limit is None else min(todo, limit),
            encoder=encoder,
            weights=weights,
            pretrained=pretrained,
            progress=progress,
            reconnect_timeout=reconnect_timeout,
            limit=limit,
            stop=stop,
            loop=LoopOptions(batch_size, loader_workers, precision, fast_decode, jpeg_on_device),
        )
    summary.seconds = time.perf_counter() - started
    _log_done(summary)
    _with_reconnect(lambda: _final_counts(db, flt, summary), reconnect_timeout)
    return summary


def _embed(
    db: Database,
    flt: ClaimFilter,
    summary: IngestSummary,
    total: int,
    *,
    encoder: Encoder | None,
    weights,
    pretrained: bool,
    progress: bool,
    reconnect_timeout: float,
    limit: int | None,
    stop,
    loop: LoopOptions,
) -> None:
    """Embed ``total`` images here (an encoder loaded once) or in ``summary.processes`` spawned processes."""
    model, dev, processes = summary.model, summary.device, summary.processes
    if processes == 1:
        if encoder is None:
            encoder = create_encoder(model, weights=weights, device=dev, pretrained=pretrained)
        if encoder.config.config_hash() != summary.config_hash:
            raise ConfigError(f"encoder {model} config changed while starting")
        _run_single(
            db,
            encoder,
            flt,
            summary,
            total,
            progress=progress,
            reconnect_timeout=reconnect_timeout,
            limit=limit,
            stop=stop,
            **asdict(loop),
        )
        return
    child = dict(
        asdict(loop),
        datasets=flt.datasets,
        splits=flt.splits,
        device=dev,
        weights=str(weights) if weights else None,
        max_attempts=flt.max_attempts,
        limit=None if limit is None else -(-limit // processes),
        pretrained=pretrained,
    )
    _run_many(db, model, flt, processes, summary, total, progress, child)


def _check_options(
    batch_size: int, loader_workers: int, processes: int, max_attempts: int, precision: str
) -> None:
    if batch_size < 1 or loader_workers < 0 or processes < 1 or max_attempts < 1:
        raise ConfigError("batch size, processes and max attempts must be >= 1 and loader workers >= 0")
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}: use {', '.join(PRECISIONS)}")


def _log_start(summary: IngestSummary, batch_size: int, todo: int) -> None:
    log.info(
        "worker start model=%s config=%s device=%s pid=%d processes=%d batch_size=%d todo=%d",
        summary.model,
        summary.config_hash[:12],
        summary.device,
        os.getpid(),
        summary.processes,
        batch_size,
        todo,
    )


def _log_done(summary: IngestSummary) -> None:
    log.info(
        "worker done model=%s pid=%d embedded=%d failed=%d batches=%d seconds=%.1f",
        summary.model,
        os.getpid(),
        summary.embedded,
        summary.failed,
        summary.batches,
        summary.seconds,
    )


def _prepare(db: Database, flt: ClaimFilter, config: EncoderConfig) -> int:
    """Check the selection, create the model's table and encoder row on first use; how many to do."""
    with db.connection() as conn:
        _check_selection(conn, flt)
        ensure_encoder_table(conn, config)
        conn.commit()
        todo = count_todo(conn, flt)
    import contextlib

    from cbir_pg.errors import CbirError
    from cbir_pg.index import drop_stale_staging

    with contextlib.suppress(CbirError):  # a crashed index build's staging index would slow every insert
        drop_stale_staging(db, config.key)
    return todo


def _run_single(
    db: Database,
    encoder: Encoder,
    flt: ClaimFilter,
    summary: IngestSummary,
    total: int,
    *,
    progress: bool,
    reconnect_timeout: float,
    **loop: Any,
) -> None:
    """The single-process loop with a progress bar, retried on a lost connection."""
    bar = _progress_bar(total, progress, encoder.config.key)
    try:
        _with_reconnect(
            lambda: _run_one(
                db, encoder, flt, summary=summary, on_batch=lambda ok, bad: bar.advance(ok + bad), **loop
            ),
            reconnect_timeout,
        )
    finally:
        bar.close()


def _final_counts(db: Database, flt: ClaimFilter, summary: IngestSummary) -> None:
    with db.connection() as conn:
        summary.done = count_done(conn, flt)
        summary.remaining = count_todo(conn, flt)


def _with_reconnect(fn, timeout: float, first_delay: float = 0.5, max_delay: float = 30.0):
    """Run ``fn``; on a lost connection wait (exponential back-off with jitter) and run it again, until
    ``timeout`` seconds have passed since the first failure. ``fn`` must be safe to repeat: the ingest
    pass is, since the server rolls back every uncommitted batch and claims skip committed images."""
    import random

    deadline = None
    delay = first_delay
    while True:
        try:
            return fn()
        except (psycopg.OperationalError, ConnectionLostError) as exc:
            now = time.monotonic()
            deadline = deadline or now + timeout
            if now >= deadline:
                raise ConnectionLostError(
                    f"gave up reconnecting after {timeout:.0f} s: {translate(exc) if isinstance(exc, psycopg.Error) else exc}"
                ) from None
            time.sleep(min(delay, max(0.0, deadline - now)) * (0.75 + 0.5 * random.random()))
            delay = min(delay * 2, max_delay)


def _run_many(db: Database, model, flt, processes, summary, total, progress, kwargs) -> None:
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [
        ctx.Process(target=_child, args=(db, model, kwargs, queue), daemon=False) for _ in range(processes)
    ]
    for p in procs:
        p.start()
    bar = _progress_bar(total, progress, model)
    results: list[tuple[str, Any]] = []
    try:
        with db.connection(autocommit=True) as conn:
            start_done = count_done(conn, flt)
            while any(p.is_alive() for p in procs) or not queue.empty():
                while not queue.empty():
                    results.append(queue.get())
                if progress:
                    bar.set(min(total, count_done(conn, flt) - start_done))
                time.sleep(0.5)
    finally:
        bar.close()
        for p in procs:
            p.join(timeout=5)
    errors = [payload for status, payload in results if status == "error"]
    for status, payload in results:
        if status == "ok":
            summary.merge(IngestSummary(**{k: v for k, v in payload.items()}))
    dead = [p.exitcode for p in procs if p.exitcode not in (0, None)]
    if errors or dead or len(results) < processes:
        detail = errors[0] if errors else f"exit codes {dead}"
        raise CbirError(
            f"{len(errors) or len(dead) or processes - len(results)} of {processes} ingest processes failed: {detail}"
        )
