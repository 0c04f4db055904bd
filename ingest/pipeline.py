"""The input pipeline: claimed batches → decoded, preprocessed tensors, made in DataLoader workers while
the model runs the previous batch.

The DataLoader's *batch sampler* is :class:`ClaimSampler`: iterated in the main process, it claims the
next batch (each claim in its own connection and open transaction) whenever the loader wants more work,
so with ``W`` workers up to ``W`` claimed batches are being decoded while the model runs the current one.
Batches come back in claim order (``in_order``), and :attr:`ClaimSampler.pending` yields the matching
transaction. Workers only read files; they never touch the database.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from cbir_pg.encoders.config import EncoderConfig
from cbir_pg.images import DecodeError, decode_file, pixel_hash
from cbir_pg.ingest.claim import ClaimedBatch, ClaimItem


@dataclass
class Failure:
    image_id: int
    stage: str  # 'decode' | 'ingest'
    reason: str
    message: str
    source: str | None = None


class DecodeDataset:
    """Map-style dataset whose "indices" are :class:`ClaimItem` s: decode the file, check its pixels are
    the ones recorded at import (``content_hash``), preprocess for the encoder. A file that is not a
    regular file, too large, undecodable or holding other pixels is a :class:`Failure`, never a vector."""

    def __init__(self, config: EncoderConfig):
        self.config = config

    def __getitem__(self, item: ClaimItem):
        from cbir_pg.encoders.preprocess import preprocess_array

        try:
            rgb = decode_file(item.path)
        except DecodeError as exc:
            return item.image_id, None, Failure(item.image_id, "decode", exc.reason, str(exc), item.path)
        if item.content_hash is not None:
            got = pixel_hash(rgb)
            if got != item.content_hash:  # the file is not the image the database describes
                msg = (
                    f"{item.path}: pixel_hash_mismatch: decoded pixels hash to {got[:16]}, the database"
                    f" records {item.content_hash[:16]} (the file was replaced or belongs to another import)"
                )
                return (
                    item.image_id,
                    None,
                    Failure(item.image_id, "decode", "pixel_hash_mismatch", msg, item.path),
                )
        try:
            return item.image_id, preprocess_array(self.config, rgb), None
        except Exception as exc:  # a preprocessing bug must not stop the run
            msg = f"{item.path}: {type(exc).__name__}: {exc}"
            return item.image_id, None, Failure(item.image_id, "decode", "preprocess_error", msg, item.path)


def collate(samples):
    """→ ``(ids, ok_ids, tensor (n_ok, 3, S, S) or None, failures)``."""
    import torch

    ids = [s[0] for s in samples]
    ok = [(s[0], s[1]) for s in samples if s[1] is not None]
    failures = [s[2] for s in samples if s[2] is not None]
    x = torch.stack([t for _, t in ok]) if ok else None
    return ids, [i for i, _ in ok], x, failures


class ClaimSampler:
    """Batch sampler that claims work. ``claim()`` returns a :class:`ClaimedBatch` (empty: nothing left)."""

    def __init__(self, claim: Callable[[], ClaimedBatch | None]):
        self._claim = claim
        self.pending: deque[ClaimedBatch] = deque()
        self.claimed = 0

    def __iter__(self) -> Iterator[list[ClaimItem]]:
        while True:
            batch = self._claim()
            if batch is None:
                return
            self.pending.append(batch)
            self.claimed += len(batch.items)
            yield batch.items


def make_loader(config: EncoderConfig, sampler: ClaimSampler, *, workers: int, pin_memory: bool):
    from torch.utils.data import DataLoader

    kw: dict = {}
    if workers > 0:
        import multiprocessing as mp

        # fork: workers start in milliseconds; they only decode files and never use the parent's
        # connections or CUDA context
        ctx = "fork" if "fork" in mp.get_all_start_methods() else None
        kw = {"prefetch_factor": 1, "multiprocessing_context": ctx, "persistent_workers": False}
    return DataLoader(
        DecodeDataset(config),  # type: ignore[arg-type]
        batch_sampler=sampler,
        num_workers=workers,
        collate_fn=collate,
        pin_memory=pin_memory,
        **kw,
    )
