"""open_clip image towers: CLIP ViT-L/14 (OpenAI) and BiomedCLIP (ViT-B/16 + PubMedBERT), ``encode_image``.

Only the vision tower is built (``encode_image(x) = visual(x)`` when not normalising, which is what the
paper's code stores before its own L2 normalisation). The tower comes from open_clip's own config for
ViT-L-14 and from BiomedCLIP's ``open_clip_config.json`` (vision part, reproduced below, so no hub call
is needed to build it); weights are the ``visual.*`` tensors of the open_clip checkpoint from the HF
cache or ``--weights FILE``. Preprocessing is open_clip's ``image_transform`` for both models (their preprocess configs give
OpenAI mean/std, bicubic, ``resize_mode='shortest'``): torchvision ``Resize(224)`` (shorter side 224,
the longer truncated) and ``CenterCrop(224)`` (offset rounded, torchvision's rule), on PIL.
"""

from __future__ import annotations

from pathlib import Path

from cbir_pg.encoders.config import OPENAI_MEAN, OPENAI_STD, EncoderConfig
from cbir_pg.encoders.registry import register_encoder
from cbir_pg.encoders.weights import OPEN_CLIP_FILES, hf_offline, missing, open_clip_repo, weights_available

#: vision part of hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224/open_clip_config.json
BIOMEDCLIP_VISION = {
    "timm_model_name": "vit_base_patch16_224",
    "timm_model_pretrained": False,
    "timm_pool": "",
    "timm_proj": "linear",
    "image_size": 224,
}

_CLIP = dict(
    input_size=224,
    mean=OPENAI_MEAN,
    std=OPENAI_STD,
    interpolation="bicubic",
    resize="shortest_crop",
    crop_pct=1.0,
    crop_offset="round",
    embedding_rule="encode_image (projected image features, before normalisation)",
)


def _checkpoint_file(config: EncoderConfig, weights) -> Path:
    if weights is not None:
        p = Path(weights)
        if p.is_dir():
            for name in OPEN_CLIP_FILES:
                if (p / name).is_file():
                    return p / name
        if p.is_file():
            return p
        raise missing(config, f"--weights {p} holds no open_clip checkpoint")
    _, rest = config.weights_source.split(":", 1)
    repo = open_clip_repo(rest)
    if not repo:
        raise missing(config, "no hub location for these weights")
    if hf_offline() and not weights_available(config):
        raise missing(config, "HF_HUB_OFFLINE=1")
    from huggingface_hub import hf_hub_download

    last: Exception | None = None
    for name in OPEN_CLIP_FILES:
        try:
            return Path(hf_hub_download(repo, name, local_files_only=hf_offline()))
        except Exception as exc:  # EntryNotFound / LocalEntryNotFound / connection errors
            last = exc
    raise missing(config, str(last).splitlines()[0] if last else "")


def _load_visual(tower, config: EncoderConfig, weights) -> None:
    from cbir_pg.encoders._torch import load_state_file

    sd = load_state_file(_checkpoint_file(config, weights))
    visual = {k[len("visual.") :]: v for k, v in sd.items() if k.startswith("visual.")}
    if not visual:
        raise ValueError("the checkpoint has no visual.* tensors: not an open_clip checkpoint")
    tower.load_state_dict(visual, strict=True)


@register_encoder(
    EncoderConfig(
        key="clip_vitl14",
        family="open_clip",
        dim=768,
        weights_source="open_clip:ViT-L-14/openai",
        arch=(("quick_gelu", True),),
        description="CLIP ViT-L/14, OpenAI image-text pretraining",
        **_CLIP,
    )
)
def build_clip_vitl14(config: EncoderConfig, *, weights=None, pretrained=True):
    import open_clip
    from open_clip.model import CLIPVisionCfg, _build_vision_tower

    cfg = open_clip.get_model_config("ViT-L-14")
    tower = _build_vision_tower(cfg["embed_dim"], CLIPVisionCfg(**cfg["vision_cfg"]), quick_gelu=True)
    if pretrained:
        _load_visual(tower, config, weights)
    return tower


@register_encoder(
    EncoderConfig(
        key="biomedclip",
        family="open_clip",
        dim=512,
        weights_source="open_clip:hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224",
        description="BiomedCLIP ViT-B/16, image-text pretraining on PMC-15M",
        **_CLIP,
    )
)
def build_biomedclip(config: EncoderConfig, *, weights=None, pretrained=True):
    from open_clip.model import CLIPVisionCfg, _build_vision_tower

    tower = _build_vision_tower(512, CLIPVisionCfg(**BIOMEDCLIP_VISION))
    if pretrained:
        _load_visual(tower, config, weights)
    return tower
