"""The :class:`Encoder` object: a config, a device, preprocessing and the forward pass that yields the
raw embedding per the config's rule. :func:`embed_arrays` adds L2 normalisation and validation."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from cbir_pg.encoders.config import EncoderConfig
from cbir_pg.encoders.preprocess import preprocess_array
from cbir_pg.encoders.registry import entry
from cbir_pg.errors import ConfigError, InputError

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(device: str = "auto") -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for, but torch sees no CUDA device (try --device cpu)")
    if device != "cpu" and not device.startswith("cuda"):
        raise ConfigError(f"unknown device {device!r}: use auto, cpu or cuda")
    return device


@dataclass
class Encoder:
    config: EncoderConfig
    module: Any  # torch.nn.Module: forward(batch) -> (B, dim) raw embedding
    device: str = "cpu"

    def preprocess(self, rgb: np.ndarray):
        """RGB uint8 (H, W, 3) → float32 tensor (3, S, S), resized and normalised per the config."""
        return preprocess_array(self.config, rgb)

    def forward(self, batch):
        """(B, 3, S, S) → (B, dim): the raw embedding (not normalised), under ``torch.inference_mode``."""
        import torch

        with torch.inference_mode():
            out = self.module(self.to_device(batch))
        return out

    def to_device(self, batch):
        """Move a batch to the encoder's device (non-blocking from pinned memory), in its memory layout."""
        import torch

        x = batch.to(self.device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last) if self.config.channels_last else x

    __call__ = forward


def create_encoder(
    key: str,
    *,
    weights: str | os.PathLike | None = None,
    device: str = "cpu",
    pretrained: bool = True,
    seed: int = 0,
) -> Encoder:
    """Build encoder ``key`` on ``device``. ``pretrained=False`` builds the real architecture with seeded
    random weights (its config hash differs, so its vectors never mix with pretrained ones)."""
    e = entry(key)
    config = e.config if pretrained else e.config.as_random(seed)
    if not config.is_random and weights is None:
        from cbir_pg.encoders.weights import missing, offline_reason, weights_available

        # fail fast, before importing torch: the local cache first, then whether a download could work
        if not weights_available(config):
            if config.pretrained_kind in ("path", "pypi"):
                raise missing(config)
            reason = offline_reason()
            if reason:
                raise missing(config, reason)
    import torch

    dev = resolve_device(device)
    if config.is_random:
        torch.manual_seed(seed)
    from cbir_pg.encoders.weights import build_explained

    module = build_explained(
        config,
        f"weights for {key}",
        lambda: e.build(config, weights=weights, pretrained=not config.is_random),
    )
    module.eval().requires_grad_(False)
    module.to(dev)
    if config.channels_last:
        module.to(memory_format=torch.channels_last)
    return Encoder(config=config, module=module, device=dev)


def l2_normalise(vectors: np.ndarray, dim: int) -> tuple[np.ndarray, list[str | None]]:
    """Normalise rows to unit length; returns the array and per row ``None`` or the reason it is invalid
    (``wrong_dim``, ``non_finite``, ``zero_norm``)."""
    v = np.asarray(vectors, dtype=np.float64)
    if v.ndim != 2 or v.shape[1] != dim:
        return np.zeros((len(v), dim), np.float32), ["wrong_dim"] * len(v)
    reasons: list[str | None] = [None] * len(v)
    finite = np.isfinite(v).all(axis=1)
    norms = np.linalg.norm(np.where(np.isfinite(v), v, 0.0), axis=1)
    out = np.zeros_like(v)
    for i in range(len(v)):
        if not finite[i]:
            reasons[i] = "non_finite"
        elif not norms[i] > 1e-12:
            reasons[i] = "zero_norm"
        else:
            out[i] = v[i] / norms[i]
    return out.astype(np.float32), reasons


def embed_arrays(encoder: Encoder, arrays: list[np.ndarray], batch_size: int = 32) -> np.ndarray:
    """Embed RGB uint8 arrays: float32 (n, dim), L2-normalised. An invalid vector is an :class:`InputError`."""
    import torch

    dim = encoder.config.dim
    out = np.zeros((len(arrays), dim), np.float32)
    for start in range(0, len(arrays), batch_size):
        chunk = arrays[start : start + batch_size]
        batch = torch.stack([encoder.preprocess(a) for a in chunk])
        raw = encoder.forward(batch).float().cpu().numpy()
        vecs, reasons = l2_normalise(raw, dim)
        bad = [(start + i, r) for i, r in enumerate(reasons) if r]
        if bad:
            i, r = bad[0]
            raise InputError(f"{encoder.config.key} produced an invalid embedding for image {i}: {r}")
        out[start : start + len(chunk)] = vecs
    return out
