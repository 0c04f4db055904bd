"""Hugging Face transformers encoders, as in the paper's published code (``src/embeddings/models.py``):
ResNet-50 logits, ViT-B/16 in21k CLS, SAM / MedSAM image embeddings averaged over space, MAE CLS and
DINOv2 CLS. MAE comes twice: ``mae_vitb16`` with masking switched off (deterministic, our default) and
``mae_vitb16_paper`` with the paper's 75% random masking, seeded (see :func:`_cls_paper_masked`).

Preprocessing follows each model's Hugging Face image processor (the code's ``AutoImageProcessor``, the
PIL implementation of transformers 4.x) with the values of the model's ``preprocessor_config.json``:
- resnet50 (ConvNextImageProcessor): shorter side 256 (crop_pct 0.875), centre crop 224, bicubic, ImageNet;
- vit_b16_in21k (ViTImageProcessor): 224 x 224, bilinear, mean = std = 0.5;
- mae_vitb16 (ViTImageProcessor, no ``resample`` in the hub config, so bilinear): 224 x 224, ImageNet;
- dinov2_vitb14 (BitImageProcessor): shorter side 256, centre crop 224, bicubic, ImageNet;
- sam_vitb / medsam_vitb (SamImageProcessor): longer side 1024, bilinear, ImageNet, zero-pad to 1024².
``tests/unit/test_preprocess_equality.py`` builds each processor from those values and compares.
"""

from __future__ import annotations

from functools import partial

from cbir_pg.encoders.config import HALF, IMAGENET_224, IMAGENET_MEAN, IMAGENET_STD, EncoderConfig
from cbir_pg.encoders.registry import register_encoder
from cbir_pg.encoders.weights import hf_location

# ----------------------------------------------------------------------------- pooling rules


def _logits(m, x):
    return m(pixel_values=x).logits


def cls_token(m, x):
    return m(pixel_values=x).last_hidden_state[:, 0, :]


def _cls_unmasked(m, x):
    # MAE: with mask_ratio 0 every patch is kept, but ViTMAE still shuffles them by random noise; an
    # increasing noise makes the shuffle the identity, so the CLS token is bit-for-bit deterministic
    n = (x.shape[-2] // m.config.patch_size) * (x.shape[-1] // m.config.patch_size)
    noise = torch_arange(n, x).expand(x.shape[0], n)
    return m(pixel_values=x, noise=noise).last_hidden_state[:, 0, :]


def _cls_paper_masked(m, x, seed: int = 0):
    """MAE as the paper's code ran it: ``mask_ratio`` (0.75) of the patches dropped at random, CLS token.

    The paper drew a fresh mask from the global RNG on every forward pass, so its vectors changed from run
    to run. Here the per-patch noise that ViTMAE sorts to choose the kept patches comes from a generator
    seeded by ``seed`` and a hash of the image's own input tensor: the same kind of uniformly random mask,
    but the same image gets the same mask in any batch, any order, any worker and any run.
    """
    import hashlib

    import torch

    n = (x.shape[-2] // m.config.patch_size) * (x.shape[-1] // m.config.patch_size)
    rows = []
    for img in x.detach().float().cpu().numpy():
        digest = hashlib.blake2b(img.tobytes(), digest_size=8, key=seed.to_bytes(8, "little")).digest()
        g = torch.Generator().manual_seed(int.from_bytes(digest, "little") & (2**63 - 1))
        rows.append(torch.rand(n, generator=g))
    noise = torch.stack(rows).to(x.device)
    return m(pixel_values=x, noise=noise).last_hidden_state[:, 0, :]


def torch_arange(n: int, like):
    import torch

    return torch.arange(n, device=like.device, dtype=torch.float32)


def _spatial_mean(m, x):
    # SamVisionEncoder → neck output (B, 256, 64, 64); average over the 64 x 64 grid
    return m(pixel_values=x).last_hidden_state.mean(dim=(2, 3))


def _head(backbone, fn):
    from cbir_pg.encoders._torch import Head

    return Head(backbone, fn)


def _hub_or_fresh(model_cls, fresh_config, config: EncoderConfig, weights, pretrained: bool, **load):
    """The Hugging Face checkpoint of ``config`` (``from_pretrained``, offline when the cache has it),
    or with ``pretrained=False`` the same architecture from ``fresh_config()`` with random weights;
    ``load`` goes to both (e.g. ``add_pooling_layer=False``)."""
    if pretrained:
        name, kw = hf_location(config, weights)
        return model_cls.from_pretrained(name, **load, **kw)
    return model_cls(fresh_config(), **load)


#: ConvNextImageProcessor / BitImageProcessor: shorter side 256, centre crop 224, bicubic
_SHORTER_256_CROP_224 = dict(interpolation="bicubic", resize="shortest_crop", crop_pct=0.875)


# ----------------------------------------------------------------------------- resnet50


@register_encoder(
    EncoderConfig(
        key="resnet50",
        family="hf",
        dim=1000,
        **IMAGENET_224,
        **_SHORTER_256_CROP_224,
        weights_source="hf:microsoft/resnet-50",
        channels_last=True,
        embedding_rule="logits (the 1000 ImageNet class scores)",
        description="ResNet-50, ImageNet-1k supervised",
    )
)
def build_resnet50(config: EncoderConfig, *, weights=None, pretrained=True):
    from transformers import ResNetConfig, ResNetForImageClassification

    fresh = partial(ResNetConfig, num_labels=1000)
    return _head(_hub_or_fresh(ResNetForImageClassification, fresh, config, weights, pretrained), _logits)


# ----------------------------------------------------------------------------- ViT-B/16 in21k


@register_encoder(
    EncoderConfig(
        key="vit_b16_in21k",
        family="hf",
        dim=768,
        input_size=224,
        mean=HALF,
        std=HALF,
        interpolation="bilinear",
        weights_source="hf:google/vit-base-patch16-224-in21k",
        embedding_rule="CLS token of last_hidden_state",
        description="ViT-B/16, ImageNet-21k supervised",
    )
)
def build_vit_b16(config: EncoderConfig, *, weights=None, pretrained=True):
    from transformers import ViTConfig, ViTModel

    model = _hub_or_fresh(ViTModel, ViTConfig, config, weights, pretrained, add_pooling_layer=False)
    return _head(model, cls_token)


# ----------------------------------------------------------------------------- SAM / MedSAM

_SAM = dict(
    dim=256,
    input_size=1024,
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
    interpolation="bilinear",
    resize="longest_pad",
    embedding_rule="image embeddings (256 x 64 x 64) averaged over space",
)


@register_encoder(
    EncoderConfig(
        key="sam_vitb",
        family="sam",
        weights_source="hf:facebook/sam-vit-base",
        description="Segment Anything ViT-B image encoder (1024 px input)",
        **_SAM,
    )
)
def build_sam(config: EncoderConfig, *, weights=None, pretrained=True):
    from transformers import SamConfig, SamModel

    model = _hub_or_fresh(SamModel, SamConfig, config, weights, pretrained)
    return _head(model.vision_encoder, _spatial_mean)


#: segment_anything's image-encoder names → transformers' SamVisionEncoder names
SA_PREFIX_TO_HF = (
    ("patch_embed.proj.", "patch_embed.projection."),
    ("blocks.", "layers."),
    ("neck.0.", "neck.conv1."),
    ("neck.1.", "neck.layer_norm1."),
    ("neck.2.", "neck.conv2."),
    ("neck.3.", "neck.layer_norm2."),
)
SA_PART_TO_HF = ((".norm1.", ".layer_norm1."), (".norm2.", ".layer_norm2."))


def sa_to_hf_key(key: str) -> str:
    for a, b in SA_PREFIX_TO_HF:
        if key.startswith(a):
            key = b + key[len(a) :]
    for a, b in SA_PART_TO_HF:
        key = key.replace(a, b)
    return key


def convert_medsam_state(sd: dict) -> dict:
    """A segment_anything checkpoint (``medsam_vit_b.pth``) → SamVisionEncoder state dict."""
    from cbir_pg.encoders._torch import under_prefix

    enc = under_prefix(sd, "image_encoder.", "segment_anything / MedSAM")
    return {sa_to_hf_key(k): v for k, v in enc.items()}


@register_encoder(
    EncoderConfig(
        key="medsam_vitb",
        family="sam",
        weights_source="path:medsam_vit_b.pth",
        description="MedSAM (SAM ViT-B fine-tuned on medical masks), image encoder",
        weights_hint="download it from the MedSAM authors (github.com/bowang-lab/MedSAM, Google Drive link)",
        paper_note=(
            "the paper's code loads MedSAM with segment_anything but feeds it the SAM processor's input (ImageNet"
            " mean/std, longest side 1024, zero padding), not MedSAM's own min-max [0, 1] 1024 x 1024 input; we follow the code"
        ),
        **_SAM,
    )
)
def build_medsam(config: EncoderConfig, *, weights=None, pretrained=True):
    from transformers import SamConfig, SamModel

    from cbir_pg.encoders._torch import with_checkpoint

    vision = with_checkpoint(
        config, weights, pretrained, lambda: SamModel(SamConfig()).vision_encoder, convert_medsam_state
    )
    return _head(vision, _spatial_mean)


# ----------------------------------------------------------------------------- MAE

#: ViTImageProcessor without ``resample`` in the hub config (so bilinear), ImageNet statistics
_MAE = dict(
    family="hf", dim=768, **IMAGENET_224, interpolation="bilinear", weights_source="hf:facebook/vit-mae-base"
)


# one builder for both MAE keys: the config's mask_ratio chooses unmasked or the paper's seeded masking
@register_encoder(
    EncoderConfig(
        key="mae_vitb16_paper",
        **_MAE,
        arch=(("mask_ratio", 0.75), ("mask_seed", 0)),
        embedding_rule=(
            "CLS token of last_hidden_state with the paper's 75% random masking; the mask is seeded by"
            " mask_seed and the image's input tensor"
        ),
        description="ViT-B/16 MAE encoder as the paper ran it (75% of patches masked, seeded)",
        paper_note=(
            "reproduces the paper's MAE row: ViTMAEModel's default mask_ratio 0.75; the paper's masks were"
            " unseeded (a fresh one per forward pass), ours are seeded per image, so the numbers match the"
            " paper's in distribution, not bit for bit"
        ),
    )
)
@register_encoder(
    EncoderConfig(
        key="mae_vitb16",
        **_MAE,
        arch=(("mask_ratio", 0.0),),
        embedding_rule="CLS token of last_hidden_state, masking off (mask_ratio 0)",
        description="ViT-B/16 masked autoencoder (MAE) encoder",
        paper_note=(
            "the paper's code left ViTMAEModel's default 75% random masking on, so its MAE embeddings saw a random"
            " quarter of the patches and changed from run to run; here mask_ratio = 0 (mae_vitb16_paper has"
            " the paper's masking, seeded)"
        ),
    )
)
def build_mae(config: EncoderConfig, *, weights=None, pretrained=True):
    from transformers import ViTMAEConfig, ViTMAEModel

    ratio = float(config.arch_option("mask_ratio", 0.0))
    if pretrained:
        name, kw = hf_location(config, weights)
        model = ViTMAEModel.from_pretrained(name, mask_ratio=ratio, **kw)
    else:
        model = ViTMAEModel(ViTMAEConfig(mask_ratio=ratio))
    if ratio == 0:
        return _head(model, _cls_unmasked)
    return _head(model, partial(_cls_paper_masked, seed=int(config.arch_option("mask_seed", 0))))


# ----------------------------------------------------------------------------- DINOv2


@register_encoder(
    EncoderConfig(
        key="dinov2_vitb14",
        family="hf",
        dim=768,
        **IMAGENET_224,
        **_SHORTER_256_CROP_224,
        weights_source="hf:facebook/dinov2-base",
        embedding_rule="CLS token of last_hidden_state (after the final layer norm)",
        description="DINOv2 ViT-B/14, self-supervised on LVD-142M",
    )
)
def build_dinov2(config: EncoderConfig, *, weights=None, pretrained=True):
    from transformers import Dinov2Config, Dinov2Model

    model = _hub_or_fresh(Dinov2Model, partial(Dinov2Config, image_size=518), config, weights, pretrained)
    return _head(model, cls_token)
