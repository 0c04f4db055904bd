"""Text towers of image-text encoders: embed a sentence into the same space as the model's image
vectors, for text-to-image search (``cbir-pg search --text``) and zero-shot evaluation.

>>> te = create_text_encoder("tiny_clip")
>>> embed_texts(te, ["a chest x-ray with pneumonia"]).shape   # (1, 32), unit rows

Only encoders registered with a text tower (:func:`~cbir_pg.encoders.registry.text_tower_keys`) have
one; any other key is refused with one line.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cbir_pg.encoders.base import l2_normalise, resolve_device
from cbir_pg.encoders.config import EncoderConfig
from cbir_pg.encoders.registry import TEXT_TOWERS, entry, has_text_tower, text_tower_keys
from cbir_pg.errors import ConfigError, InputError


@dataclass
class TextEncoder:
    config: EncoderConfig
    tower: Any  # callable(list[str]) -> (B, dim) tensor
    device: str = "cpu"


def check_text_tower(key: str) -> EncoderConfig:
    """The config of ``key`` when it has a text tower; otherwise a one-line :class:`ConfigError`."""
    e = entry(key)
    if not has_text_tower(key):
        raise ConfigError(
            f"model {key!r} has no text tower: text search needs an image-text model ({', '.join(text_tower_keys())})"
        )
    return e.config


def create_text_encoder(
    key: str, *, weights: str | os.PathLike | None = None, device: str = "cpu"
) -> TextEncoder:
    """Build the text tower of ``key`` (its own tokenizer inside), with the weights its image tower uses."""
    config = check_text_tower(key)
    if not config.is_random and weights is None:
        from cbir_pg.encoders.weights import hf_offline, missing, weights_available

        if hf_offline() and not weights_available(config):  # fail fast, before importing torch
            raise missing(config, "HF_HUB_OFFLINE=1")
    dev = resolve_device(device)
    from cbir_pg.encoders.weights import build_explained

    tower = build_explained(
        config,
        f"text tower of {key}",
        lambda: TEXT_TOWERS.get(key)(config, weights=weights, pretrained=not config.is_random),
    )
    tower.eval().requires_grad_(False)
    tower.to(dev)
    return TextEncoder(config=config, tower=tower, device=dev)


def embed_texts(encoder: TextEncoder, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
    """float32 ``(len(texts), dim)``, L2-normalised; an empty text is an :class:`InputError`."""
    texts = [str(t) for t in texts]
    blank = [i for i, t in enumerate(texts) if not t.strip()]
    if blank:
        raise InputError(f"text {blank[0]} is empty: give a description such as 'right pleural effusion'")
    dim = encoder.config.dim
    out = np.zeros((len(texts), dim), np.float32)
    for start in range(0, len(texts), batch_size):
        chunk = texts[start : start + batch_size]
        raw = encoder.tower(chunk).float().cpu().numpy()
        vecs, reasons = l2_normalise(raw, dim)
        bad = [r for r in reasons if r]
        if bad:
            raise InputError(f"{encoder.config.key} produced an invalid text embedding: {bad[0]}")
        out[start : start + len(chunk)] = vecs
    return out
