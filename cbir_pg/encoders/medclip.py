"""MedCLIP's vision tower as in the paper's code (``MedCLIPModel(vision_cls=MedCLIPVisionModelViT)``):
a Swin-T (transformers ``SwinModel``, microsoft/swin-tiny-patch4-window7-224 architecture), its pooled
output projected 768 → 512 by a bias-free linear layer, then L2-normalised (``encode_image``).

Weights: MedCLIP's released ``pytorch_model.bin`` (keys ``vision_model.model.*`` and
``vision_model.projection_head.weight``), from ``--weights`` (the file or its folder) or
``$CBIR_PG_HOME/weights/medclip_swint/``. Preprocessing as the code's ``CLIPFeatureExtractor(size=224, crop_size=224, resample=BICUBIC,
do_pad_square=True, ...)``: that class has no ``do_pad_square`` option and ignores it, so the image is
*not* padded: the shorter side is resized to 224 (bicubic, the longer side truncated), the centre
224 x 224 is cropped (transformers' floor offset), and MedCLIP's single-channel mean/std
(``medclip.constants.IMG_MEAN`` / ``IMG_STD``) is repeated over RGB.
"""

from __future__ import annotations

from cbir_pg.encoders.config import EncoderConfig
from cbir_pg.encoders.registry import register_encoder

#: medclip.constants.IMG_MEAN / IMG_STD
MEDCLIP_MEAN = 0.5862785803043838
MEDCLIP_STD = 0.27950088968644304


def _make_tower():
    import torch
    from torch import nn
    from transformers import SwinConfig, SwinModel

    class MedCLIPVision(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = SwinModel(SwinConfig())  # defaults = swin-tiny-patch4-window7-224
            self.projection_head = nn.Linear(768, 512, bias=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.shape[1] == 1:
                x = x.repeat(1, 3, 1, 1)
            emb = self.projection_head(self.model(pixel_values=x).pooler_output)
            return emb / emb.norm(dim=-1, keepdim=True)

    return MedCLIPVision()


def _vision_state(sd: dict) -> dict:
    """MedCLIP's checkpoint → the vision tower's state dict (the buffers ``position_ids`` left out)."""
    from cbir_pg.encoders._torch import under_prefix

    vision = under_prefix(sd, "vision_model.", "MedCLIP")
    return {k: v for k, v in vision.items() if not k.endswith("position_ids")}


@register_encoder(
    EncoderConfig(
        key="medclip_swint",
        family="medclip",
        dim=512,
        input_size=224,
        mean=(MEDCLIP_MEAN,) * 3,
        std=(MEDCLIP_STD,) * 3,
        interpolation="bicubic",
        resize="shortest_crop",
        crop_pct=1.0,
        weights_source="path:pytorch_model.bin",
        embedding_rule="Swin-T pooled output → Linear 768→512 (no bias) → L2-normalised",
        description="MedCLIP vision tower (Swin-T), contrastive on MIMIC-CXR + CheXpert",
        weights_hint="get MedCLIP's pretrained Swin checkpoint (github.com/RyanWangZf/MedCLIP)",
    )
)
def build_medclip(config: EncoderConfig, *, weights=None, pretrained=True):
    from cbir_pg.encoders._torch import with_checkpoint

    return with_checkpoint(config, weights, pretrained, _make_tower, _vision_state)
