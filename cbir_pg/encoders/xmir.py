"""X-MIR's retrieval network: torchvision DenseNet-121 features → ReLU → global average pool (1024-d).

Weights: an X-MIR checkpoint (a DenseNet-121 trained for retrieval), from ``--weights`` or
``$CBIR_PG_HOME/weights/xmir_densenet121/``. Common wrappers (``module.``, ``model.``, ``backbone.``,
``densenet121.``) are stripped; the ``features.*`` tensors must all be present. Preprocessing: 224 x 224
bilinear, ImageNet mean/std.
"""

from __future__ import annotations

import re

from cbir_pg.encoders.config import IMAGENET_224, EncoderConfig
from cbir_pg.encoders.registry import register_encoder

#: pre-0.4 torchvision names ("norm.1") → current ("norm1"), as torchvision's own loader does
_LEGACY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$"
)


def _pooled(features, x):
    import torch.nn.functional as F

    return F.adaptive_avg_pool2d(F.relu(features(x)), 1).flatten(1)


def _features_state(sd: dict) -> dict:
    """An X-MIR checkpoint → DenseNet-121 ``features`` state dict: wrappers stripped, legacy names renamed."""
    from cbir_pg.encoders._torch import strip_prefixes, under_prefix

    sd = strip_prefixes(sd, ("module.", "model.", "backbone.", "densenet121.", "encoder."))
    feats = under_prefix(sd, "features.", "DenseNet-121")
    return {_LEGACY.sub(r"\1\2", k): v for k, v in feats.items()}


@register_encoder(
    EncoderConfig(
        key="xmir_densenet121",
        family="xmir",
        dim=1024,
        **IMAGENET_224,
        interpolation="bilinear",
        weights_source="path:xmir_densenet121.pth",
        channels_last=True,
        embedding_rule="DenseNet-121 features → ReLU → global average pool",
        description="X-MIR DenseNet-121 retrieval network (chest X-ray)",
        weights_hint="get the X-MIR DenseNet-121 checkpoint from its authors (github.com/brian-hu/xmir)",
    )
)
def build_xmir(config: EncoderConfig, *, weights=None, pretrained=True):
    from torchvision.models import densenet121

    from cbir_pg.encoders._torch import Head, with_checkpoint

    features = with_checkpoint(
        config, weights, pretrained, lambda: densenet121(weights=None).features, _features_state
    )
    return Head(features, _pooled)
