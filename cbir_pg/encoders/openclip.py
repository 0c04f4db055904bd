"""open_clip image-text models: CLIP ViT-L/14 (OpenAI), BiomedCLIP (ViT-B/16 + PubMedBERT) and
``tiny_clip`` (a 2-layer CLIP with seeded random weights, for tests); their image towers (``encode_image``)
and their text towers (``encode_text`` with the model's own tokenizer), registered with
:func:`~cbir_pg.encoders.registry.register_text_tower` for text-to-image search.

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
from cbir_pg.encoders.registry import register_encoder, register_text_tower
from cbir_pg.encoders.weights import (
    OPEN_CLIP_FILES,
    hf_offline,
    missing,
    offline_reason,
    open_clip_repo,
    weights_available,
)

#: text part of the same open_clip_config.json (BiomedBERT through transformers, open_clip's HFTextEncoder)
BIOMEDCLIP_TEXT = {
    "hf_model_name": "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract",
    "hf_tokenizer_name": "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract",
    "hf_proj_type": "mlp",
    "hf_pooler_type": "cls_last_hidden_state_pooler",
    "context_length": 256,
}

#: tiny_clip: open_clip's CLIP class at test size (the text tower keeps open_clip's BPE vocabulary)
TINY_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}

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
    cached = weights_available(config)
    if not cached:
        reason = offline_reason()
        if reason:
            raise missing(config, reason)
    from huggingface_hub import hf_hub_download

    last: Exception | None = None
    for name in OPEN_CLIP_FILES:
        try:
            return Path(hf_hub_download(repo, name, local_files_only=cached or hf_offline()))
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


# --------------------------------------------------------------------------- text towers
class TextTower:
    """``forward(texts) -> (B, dim)``: the model's tokenizer, then ``encode_text`` (not normalised)."""

    def __init__(self, model, tokenizer):
        self.model = model
        self.tokenizer = tokenizer

    def __call__(self, texts):
        import torch

        device = next(self.model.parameters()).device
        with torch.inference_mode():
            return self.model.encode_text(self.tokenizer(list(texts)).to(device))

    # the torch.nn.Module calls create_text_encoder makes
    def eval(self):
        self.model.eval()
        return self

    def requires_grad_(self, flag: bool):
        self.model.requires_grad_(flag)
        return self

    def to(self, *args, **kwargs):
        self.model.to(*args, **kwargs)
        return self


def _load_full(model, config: EncoderConfig, weights) -> None:
    from cbir_pg.encoders._torch import load_state_file

    sd = load_state_file(_checkpoint_file(config, weights))
    sd = sd.get("state_dict", sd) if isinstance(sd, dict) else sd
    sd = {k.removeprefix("module."): v for k, v in sd.items()}
    model.load_state_dict(sd, strict=True)


@register_text_tower("clip_vitl14")
def build_clip_vitl14_text(config: EncoderConfig, *, weights=None, pretrained=True):
    import open_clip

    model = open_clip.create_model("ViT-L-14-quickgelu", pretrained=None)
    if pretrained:
        _load_full(model, config, weights)
    return TextTower(model, open_clip.get_tokenizer("ViT-L-14"))


@register_text_tower("biomedclip")
def build_biomedclip_text(config: EncoderConfig, *, weights=None, pretrained=True):
    from open_clip.model import CustomTextCLIP
    from open_clip.tokenizer import HFTokenizer

    if pretrained:
        path = _checkpoint_file(config, weights)  # the one-line missing-weights error comes first
    # the text tower needs BiomedBERT's config and tokenizer from the HF cache (transformers)
    model = CustomTextCLIP(512, vision_cfg=BIOMEDCLIP_VISION, text_cfg=BIOMEDCLIP_TEXT)
    if pretrained:
        _load_full(model, config, path)
    tokenizer = HFTokenizer(
        BIOMEDCLIP_TEXT["hf_tokenizer_name"], context_length=BIOMEDCLIP_TEXT["context_length"]
    )
    return TextTower(model, tokenizer)


def _tiny_clip(config: EncoderConfig):
    import open_clip
    import torch

    seed = int(config.weights_source.rsplit("=", 1)[-1]) if "seed=" in config.weights_source else 0
    torch.manual_seed(seed)
    return open_clip.CLIP(**TINY_CLIP), open_clip


@register_encoder(
    EncoderConfig(
        key="tiny_clip",
        family="open_clip",
        dim=TINY_CLIP["embed_dim"],
        weights_source="random:seed=0",
        description="test encoder: 2-layer open_clip CLIP (image + text towers), random seeded weights",
        **{**_CLIP, "input_size": 32},
    )
)
def build_tiny_clip(config: EncoderConfig, *, weights=None, pretrained=True):
    model, _ = _tiny_clip(config)
    return model.visual


@register_text_tower("tiny_clip")
def build_tiny_clip_text(config: EncoderConfig, *, weights=None, pretrained=True):
    model, open_clip = _tiny_clip(config)
    from open_clip.tokenizer import SimpleTokenizer

    return TextTower(model, SimpleTokenizer(context_length=TINY_CLIP["text_cfg"]["context_length"]))
