"""Tiny test encoders: real torch code paths (a small CNN, a small ViT), seeded random weights.

They run the whole pipeline in seconds, in tests and demos. The weights are a pure function of the
seed (``random:seed=0``), so two processes build identical encoders and their vectors agree.
"""

from __future__ import annotations

from cbir_pg.encoders.config import HALF, EncoderConfig
from cbir_pg.encoders.registry import register_encoder


def _seeded(seed: int):
    import torch

    torch.manual_seed(seed)


def _seed_of(config: EncoderConfig) -> int:
    return int(config.weights_source.rsplit("=", 1)[-1]) if "seed=" in config.weights_source else 0


#: 32 px input, mean = std = 0.5, seeded random weights
_TINY = dict(family="tiny", input_size=32, mean=HALF, std=HALF, weights_source="random:seed=0")


@register_encoder(
    EncoderConfig(
        key="tiny_cnn",
        dim=16,
        **_TINY,
        interpolation="bilinear",
        embedding_rule="conv stack → global average pool → linear",
        channels_last=True,
        description="test encoder: 3-layer CNN, random seeded weights",
    )
)
def build_tiny_cnn(config: EncoderConfig, *, weights=None, pretrained=True):
    from torch import nn

    _seeded(_seed_of(config))
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, stride=2, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(32, 32, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, config.dim),
    )


@register_encoder(
    EncoderConfig(
        key="tiny_vit",
        dim=32,
        **_TINY,
        interpolation="bicubic",
        embedding_rule="CLS token of a 2-layer ViT (patch 8)",
        description="test encoder: 2-layer ViT, random seeded weights",
    )
)
def build_tiny_vit(config: EncoderConfig, *, weights=None, pretrained=True):
    from transformers import ViTConfig, ViTModel

    from cbir_pg.encoders._torch import Head
    from cbir_pg.encoders.hf import cls_token

    _seeded(_seed_of(config))
    cfg = ViTConfig(
        hidden_size=config.dim,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=2 * config.dim,
        image_size=config.input_size,
        patch_size=8,
    )
    return Head(ViTModel(cfg, add_pooling_layer=False), cls_token)
