"""The input pipeline: claimed batches → ``uint8`` pixels (or JPEG bytes) from DataLoader workers →
the model's input, resized and normalised batched on the model's device.

Workers ship bytes, not floats
------------------------------
A loader worker reads each file and decodes it to RGB ``uint8`` at its native size (PNG, DICOM, and
JPEG on the CPU); with ``jpeg_on_device`` it only checks a JPEG's header and ships the file's bytes, and
the main process decodes the whole batch on the GPU (``torchvision.io.decode_jpeg(device="cuda")``).
``fast_decode`` (opt-in) decodes JPEGs in PIL's draft mode, scaled down in the DCT domain to the
smallest power-of-two size at or above what the resize needs. Resize, crop, normalisation and dtype
run on the model's device (:class:`cbir_pg.encoders.device_preprocess.DevicePreprocessor`); configs it
cannot reproduce are resized by the CPU reference in the worker and only normalised on the device.
The worker's ``collate`` stacks images of one size into one tensor, so a batch crosses the process
boundary as a few ``uint8`` tensors (4x fewer bytes than float32 at the model's size for the resize-only
path, usually far fewer for small native images).

Pixel check
-----------
An image whose pixel hash was recorded at import (``cbir.image.content_hash``) is decoded exactly on the
CPU and its hash compared before it is encoded: a file replaced since the import, or one that belongs to
another import, is a ``pixel_hash_mismatch`` failure, never a vector. GPU JPEG decoding and
``fast_decode`` give slightly different pixels, so they apply to images without a recorded hash (imports
made with ``--no-hash``, the huge ones where their speed matters).

Claiming
--------
The DataLoader's *batch sampler* is :class:`ClaimSampler`: iterated in the main process, it claims the
next batch (each claim in its own connection and open transaction) whenever the loader wants more work,
so with ``W`` workers up to ``W`` claimed batches are being decoded while the model runs the current one.
Batches come back in claim order (``in_order``), and :attr:`ClaimSampler.pending` yields the matching
transaction. Workers only read files; they never touch the database.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from cbir_pg.encoders.config import EncoderConfig
from cbir_pg.images import DecodeError, decode_file, verify_pixels
from cbir_pg.ingest.claim import ClaimedBatch, ClaimItem

_JPEG_MAGIC = b"\xff\xd8\xff"


@dataclass
class Failure:
    image_id: int
    stage: str  # 'decode' | 'ingest'
    reason: str
    message: str
    source: str | None = None


@dataclass(frozen=True)
class DecodeOptions:
    """How workers decode: ``resize_on_device`` (else the CPU reference resizes), ``jpeg_on_device``
    (ship JPEG bytes for batched decoding in the main process), ``fast_decode`` (PIL draft mode)."""

    resize_on_device: bool = True
    jpeg_on_device: bool = False
    fast_decode: bool = False


@dataclass
class LoadedBatch:
    """One decoded batch as it leaves a worker.

    ``ok_ids`` lists the images that will be encoded, in output order. ``groups`` are
    ``(kind, positions, tensor)`` with positions into ``ok_ids``: kind ``"native"`` holds ``uint8
    (n, H, W, 3)`` images to resize on the device, ``"sized"`` ``uint8 (n, 3, h, w)`` already resized by
    the CPU reference (``content`` (h, w)), ``"jpeg"`` the concatenated JPEG files (``lengths``)."""

    ids: list[int]
    ok_ids: list[int] = field(default_factory=list)
    groups: list[tuple[str, list[int], object]] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)

    def pin_memory(self) -> LoadedBatch:
        """Called by the DataLoader (``pin_memory=True``): page-lock the pixel tensors."""
        self.groups = [(k, pos, t.pin_memory() if k != "jpeg" else t) for k, pos, t in self.groups]
        return self


def _jpeg_header(path: str, data: bytes):
    """Open a JPEG lazily (header only) and apply the decoder's checks; returns the PIL image or raises
    :class:`DecodeError` (the CPU decoder then gives the exact reason)."""
    import io

    from PIL import Image

    from cbir_pg.images import MAX_PIXELS, MIN_SIDE

    im = Image.open(io.BytesIO(data))
    if im.format != "JPEG" or im.mode not in ("L", "RGB"):
        return None
    if im.width * im.height > MAX_PIXELS or min(im.width, im.height) < MIN_SIDE:
        return None
    return im


def _draft_size(config: EncoderConfig) -> tuple[int, int]:
    """The smallest size the resize reads at full quality: PIL's draft keeps both sides >= this."""
    s = config.input_size
    need = int(round(s / config.crop_pct)) if config.resize == "shortest_crop" else s
    return need, need


def _failed(item: ClaimItem, exc: DecodeError) -> tuple:
    """The dataset item of an image that could not be decoded: its id and the failure."""
    return (item.image_id, None, None, Failure(item.image_id, "decode", exc.reason, str(exc), item.path))


class DecodeDataset:
    """Map-style dataset whose "indices" are :class:`ClaimItem` s: read and decode one file.

    Returns ``(image_id, kind, payload, failure)`` with kind ``"native"`` (RGB ``uint8`` HWC array),
    ``"sized"`` (``uint8`` CHW at the model's size, content (h, w)), ``"jpeg"`` (the file's bytes) or
    ``None`` (failure)."""

    def __init__(self, config: EncoderConfig, options: DecodeOptions | None = None):
        self.config = config
        self.options = options or DecodeOptions()

    def _decode(self, item: ClaimItem):
        opts = self.options
        # An image whose pixel hash was recorded at import is decoded exactly on the CPU, so its pixels
        # can be checked (nvJPEG and draft mode give slightly different pixels); the batched GPU JPEG
        # decode and --fast-decode serve the huge imports made with --no-hash.
        if (opts.jpeg_on_device or opts.fast_decode) and item.content_hash is None:
            from cbir_pg.images import read_regular_file

            data = read_regular_file(item.path)  # regular files only, bounded: never a FIFO or /dev/zero
            if data[:3] == _JPEG_MAGIC:
                try:
                    im = _jpeg_header(item.path, data)
                except Exception:
                    im = None
                if im is not None and opts.jpeg_on_device:
                    return "jpeg", data
                if im is not None and opts.fast_decode:
                    try:
                        from cbir_pg.images import _pil_to_rgb

                        im.draft(im.mode, _draft_size(self.config))
                        im.load()
                        return "native", _pil_to_rgb(im)
                    except Exception:
                        pass  # the exact decoder below reports the error
            from cbir_pg.images import decode_bytes

            return "native", decode_bytes(data, item.path)
        return "native", decode_file(item.path)

    def __getitem__(self, item: ClaimItem):
        try:
            kind, payload = self._decode(item)
        except DecodeError as exc:
            return _failed(item, exc)
        if kind == "native" and item.content_hash is not None:
            try:  # the file must be the image the database describes (the guarded reader's own check)
                verify_pixels(payload, item.content_hash, str(item.path))
            except DecodeError as exc:
                return _failed(item, exc)
        if kind == "native" and not self.options.resize_on_device:
            try:
                import numpy as np

                from cbir_pg.encoders.preprocess import resize_array

                arr, content = resize_array(self.config, payload)
                return item.image_id, "sized", (np.ascontiguousarray(arr.transpose(2, 0, 1)), content), None
            except Exception as exc:  # a preprocessing bug must not stop the run
                msg = f"{item.path}: {type(exc).__name__}: {exc}"
                return (
                    item.image_id,
                    None,
                    None,
                    Failure(item.image_id, "decode", "preprocess_error", msg, item.path),
                )
        return item.image_id, kind, payload, None


def collate(samples) -> LoadedBatch:
    """Stack the images of one kind and size into one tensor (few tensors cross the process boundary)."""
    import numpy as np
    import torch

    out = LoadedBatch(ids=[s[0] for s in samples])
    by_key: dict[tuple, list[tuple[int, object]]] = {}
    jpegs: list[tuple[int, bytes]] = []
    for image_id, kind, payload, failure in samples:
        if failure is not None:
            out.failures.append(failure)
            continue
        pos = len(out.ok_ids)
        out.ok_ids.append(image_id)
        if kind == "jpeg":
            jpegs.append((pos, payload))
        elif kind == "sized":
            arr, content = payload
            by_key.setdefault(("sized", arr.shape, content), []).append((pos, arr))
        else:
            by_key.setdefault(("native", payload.shape), []).append((pos, payload))
    for key, members in by_key.items():
        t = torch.from_numpy(np.stack([a for _, a in members]))
        kind = key[0] if key[0] == "native" else f"sized:{key[2][0]}x{key[2][1]}"
        out.groups.append((kind, [p for p, _ in members], t))
    if jpegs:
        blob = np.frombuffer(b"".join(d for _, d in jpegs), dtype=np.uint8).copy()
        out.lengths = [len(d) for _, d in jpegs]
        out.groups.append(("jpeg", [p for p, _ in jpegs], torch.from_numpy(blob)))
    return out


class BatchPreprocessor:
    """Main-process side: a :class:`LoadedBatch` → the model input ``(len(ok_ids), 3, S, S)`` on the
    device, rows in ``ok_ids`` order. JPEG groups are decoded here in one batched call
    (``torchvision.io.decode_jpeg``, on the GPU when the device is CUDA); a file the batched decoder
    rejects is decoded alone, and one the CPU decoder rejects too becomes a failure with its reason."""

    def __init__(self, config: EncoderConfig, device: str, uint8_resize: bool | None = None):
        from cbir_pg.encoders.device_preprocess import DevicePreprocessor

        self.config = config
        self.device = device
        self.prep = DevicePreprocessor(config, device, uint8_resize)

    def _decode_jpegs(self, blob, lengths: list[int], positions: list[int], ok_ids, paths, failures):
        """→ list of ``(position, uint8 CHW tensor on the device)``; failures appended."""
        import warnings

        import torch

        with warnings.catch_warnings():  # torchvision announces a move of its decoders to torchcodec
            warnings.simplefilter("ignore", DeprecationWarning)
            from torchvision.io import ImageReadMode, decode_jpeg

        dev = self.device if self.device.startswith("cuda") else "cpu"
        datas = list(torch.split(blob, lengths))
        try:
            imgs = decode_jpeg(datas, mode=ImageReadMode.RGB, device=dev)
            return list(zip(positions, imgs, strict=True))
        except RuntimeError:
            pass  # one bad file fails the whole batched call: decode them one by one
        out = []
        for pos, data in zip(positions, datas, strict=True):
            try:
                out.append((pos, decode_jpeg(data, mode=ImageReadMode.RGB, device=dev)))
            except RuntimeError:
                from cbir_pg.images import decode_bytes

                path = paths.get(ok_ids[pos])
                try:  # the CPU decoder accepts it, or names the reason
                    rgb = decode_bytes(data.numpy().tobytes(), str(path))
                    out.append((pos, torch.from_numpy(rgb).permute(2, 0, 1)))
                except DecodeError as exc:
                    failures.append(Failure(ok_ids[pos], "decode", exc.reason, str(exc), path))
        return out

    def __call__(self, loaded: LoadedBatch, paths: dict[int, str] | None = None):
        """→ ``(ok_ids, x or None)``: ``ok_ids`` drops images whose decoding failed here (their failures
        are appended to ``loaded.failures``)."""
        import torch

        paths = paths or {}
        parts: list[tuple[list[int], object]] = []
        for kind, positions, t in loaded.groups:
            if kind == "native":
                parts.append((positions, self.prep(t)))
            elif kind.startswith("sized"):
                parts.append((positions, self.prep.normalise(t)))
            else:  # jpeg
                decoded = self._decode_jpegs(
                    t, loaded.lengths, positions, loaded.ok_ids, paths, loaded.failures
                )
                by_shape: dict[tuple, list] = {}
                for pos, img in decoded:
                    by_shape.setdefault(tuple(img.shape), []).append((pos, img))
                for members in by_shape.values():
                    stacked = torch.stack([im.to(self.device, non_blocking=True) for _, im in members])
                    parts.append(([p for p, _ in members], self.prep(stacked)))
        kept = sorted(p for positions, _ in parts for p in positions)
        if not kept:
            return [], None
        if len(parts) == 1 and parts[0][0] == kept:
            x = parts[0][1]
        else:
            s = self.config.input_size
            x = torch.empty((len(kept), 3, s, s), dtype=torch.float32, device=self.device)
            if self.config.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            row = {p: r for r, p in enumerate(kept)}
            for positions, xs in parts:
                idx = torch.tensor([row[p] for p in positions], device=self.device)
                x.index_copy_(0, idx, xs)
        return [loaded.ok_ids[p] for p in kept], x


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


def make_loader(
    config: EncoderConfig,
    sampler: ClaimSampler,
    *,
    workers: int,
    pin_memory: bool,
    options: DecodeOptions | None = None,
):
    from torch.utils.data import DataLoader

    kw: dict = {}
    if workers > 0:
        import multiprocessing as mp

        # fork: workers start in milliseconds; they only decode files and never use the parent's
        # connections or CUDA context
        ctx = "fork" if "fork" in mp.get_all_start_methods() else None
        kw = {"prefetch_factor": 1, "multiprocessing_context": ctx, "persistent_workers": False}
    return DataLoader(
        DecodeDataset(config, options),  # type: ignore[arg-type]
        batch_sampler=sampler,
        num_workers=workers,
        collate_fn=collate,
        pin_memory=pin_memory,
        **kw,
    )
