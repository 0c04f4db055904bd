"""Encoders: a registry of frozen configs (one per key) and one module per model family.

>>> from cbir_pg.encoders import create_encoder, embed_arrays
>>> enc = create_encoder("tiny_cnn")
>>> embed_arrays(enc, [rgb]).shape   # (1, 16), unit rows

Family modules import torch/transformers/open_clip inside their builders, so listing is instant.
"""

from __future__ import annotations

# the families register themselves on import (they import torch & co. inside their builders)
from cbir_pg.encoders import efficientnet, hf, medclip, openclip, tiny, xmir  # noqa: F401
from cbir_pg.encoders.base import DEVICES, Encoder, create_encoder, embed_arrays, l2_normalise, resolve_device
from cbir_pg.encoders.config import EncoderConfig
from cbir_pg.encoders.registry import get_config, list_encoders, register_encoder
from cbir_pg.encoders.weights import weights_available

__all__ = [
    "DEVICES",
    "Encoder",
    "EncoderConfig",
    "create_encoder",
    "embed_arrays",
    "get_config",
    "l2_normalise",
    "list_encoders",
    "register_encoder",
    "resolve_device",
    "weights_available",
]
