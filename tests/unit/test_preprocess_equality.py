"""Every registered encoder's preprocessing equals its library's own processor or transform, on real images.

The references are built offline, without weights, from the values the models publish:
- Hugging Face models: transformers' PIL image processors (the implementation transformers 4.x used by
  default, hence the paper's code) with the values of each hub repo's ``preprocessor_config.json``;
- MedCLIP: the arguments the paper's code passes to ``CLIPFeatureExtractor`` (``src/embeddings/models.py``);
- open_clip models: ``image_transform_v2`` of the model's pretrained / hub preprocess config;
- EfficientNet-Lite: timm's eval transform resolved from ``tf_efficientnet_lite*.in1k``'s pretrained config;
- X-MIR and the tiny test encoders: torchvision's ``Resize((s, s))`` + ``ToTensor`` + ``Normalize``.

Real images: MedMNIST (28 x 28 greyscale), pydicom's CT and MR test files, crops of them with odd,
non-square sizes (so centre-crop rounding matters) and a 280 x 364 mosaic of chest X-rays (downscaling).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cbir_pg.encoders import get_config, list_encoders
from cbir_pg.encoders.config import IMAGENET_MEAN, IMAGENET_STD, OPENAI_MEAN, OPENAI_STD
from cbir_pg.encoders.preprocess import preprocess_array

ATOL = 1e-6


@pytest.fixture(scope="module")
def images() -> dict[str, np.ndarray]:
    import os

    import pydicom
    from conftest import require_data

    from cbir_pg.images import decode_file

    data = require_data()
    breast = np.load(data / "breastmnist.npz")["test_images"][3]
    chest = np.load(data / "pneumoniamnist_subset.npz")["test_images"]
    rgb = lambda a: np.ascontiguousarray(np.repeat(a[..., None], 3, axis=2))  # noqa: E731
    files = os.path.join(os.path.dirname(pydicom.__file__), "data", "test_files")
    ct = decode_file(os.path.join(files, "CT_small.dcm"))
    mr = decode_file(os.path.join(files, "MR_small.dcm"))
    mosaic = np.block([[chest[r * 13 + c] for c in range(13)] for r in range(10)])  # 280 x 364
    return {
        "breastmnist_28x28": rgb(breast),
        "ct_128x128": ct,
        "ct_crop_128x117": np.ascontiguousarray(ct[:, 3:120]),
        "mr_crop_59x64": np.ascontiguousarray(mr[5:, :]),
        "mr_crop_64x51": np.ascontiguousarray(mr[:, 6:57]),
        "xray_mosaic_280x364": rgb(mosaic),
        "xray_mosaic_tall_333x250": rgb(np.ascontiguousarray(np.vstack([mosaic, mosaic])[:333, :250])),
        # resized to 227 x 224: a crop margin of 3, where floor (1) and round (2) disagree
        "xray_mosaic_254x250": rgb(np.ascontiguousarray(np.vstack([mosaic, mosaic])[:254, :250])),
    }


# ----------------------------------------------------------------------------- the libraries' own pipelines


def _hf_class(cls_name: str, module: str):
    """transformers 5: the PIL backend class (``ViTImageProcessorPil``); 4.x: the default, PIL-based
    class of the same name without the suffix (what the paper's code got from ``AutoImageProcessor``)."""
    import importlib

    try:
        return getattr(importlib.import_module(f"transformers.models.{module}"), cls_name)
    except (ImportError, AttributeError):
        import transformers

        return getattr(transformers, cls_name.removesuffix("Pil"))


def _hf(cls_name: str, module: str, **kw):
    proc = _hf_class(cls_name, module)(**kw)

    def run(rgb: np.ndarray) -> torch.Tensor:
        from PIL import Image

        out = proc(images=Image.fromarray(rgb), return_tensors="pt")["pixel_values"][0]
        return out.float()

    return run


def _torchvision(size: int, interpolation: str, mean, std):
    from PIL import Image
    from torchvision import transforms as T

    interp = {"bilinear": T.InterpolationMode.BILINEAR, "bicubic": T.InterpolationMode.BICUBIC}[interpolation]
    t = T.Compose([T.Resize((size, size), interpolation=interp), T.ToTensor(), T.Normalize(mean, std)])
    return lambda rgb: t(Image.fromarray(rgb))


def _open_clip(pretrained_cfg: dict):
    from open_clip.transform import PreprocessCfg, image_transform_v2, merge_preprocess_dict
    from PIL import Image

    cfg = PreprocessCfg(**merge_preprocess_dict(PreprocessCfg(size=224), pretrained_cfg))
    t = image_transform_v2(cfg, is_train=False)
    return lambda rgb: t(Image.fromarray(rgb))


def _timm(arch: str):
    import timm
    from PIL import Image

    model = timm.create_model(arch, pretrained=False)  # only for its pretrained_cfg; no weights
    t = timm.data.create_transform(**timm.data.resolve_data_config({}, model=model))
    return lambda rgb: t(Image.fromarray(rgb))


HALF = (0.5, 0.5, 0.5)
_SAM = dict(
    size={"longest_edge": 1024},
    pad_size={"height": 1024, "width": 1024},
    resample=2,
    image_mean=list(IMAGENET_MEAN),
    image_std=list(IMAGENET_STD),
)


def _medclip():
    import inspect

    from cbir_pg.encoders.medclip import MEDCLIP_MEAN, MEDCLIP_STD

    # the paper's CLIPFeatureExtractor(...) arguments; do_pad_square is not an option of the class (it was
    # ignored), so it is left out here and nothing pads
    cls = _hf_class("CLIPImageProcessorPil", "clip.image_processing_pil_clip")
    known = (
        getattr(getattr(cls, "valid_kwargs", None), "__annotations__", None)
        or inspect.signature(cls).parameters
    )
    assert "do_pad_square" not in known
    return _hf(
        "CLIPImageProcessorPil",
        "clip.image_processing_pil_clip",
        do_resize=True,
        size={"shortest_edge": 224},
        resample=3,
        do_center_crop=True,
        crop_size={"height": 224, "width": 224},
        do_normalize=True,
        image_mean=[MEDCLIP_MEAN] * 3,
        image_std=[MEDCLIP_STD] * 3,
        do_convert_rgb=False,
    )


def _mae():
    import inspect

    from transformers.image_utils import PILImageResampling

    # facebook/vit-mae-base's preprocessor_config.json names no resample: the class default, bilinear
    cls = _hf_class("ViTImageProcessorPil", "vit.image_processing_pil_vit")
    default = getattr(cls, "resample", None) or inspect.signature(cls).parameters["resample"].default
    assert default == PILImageResampling.BILINEAR
    return _hf(
        "ViTImageProcessorPil",
        "vit.image_processing_pil_vit",
        size={"height": 224, "width": 224},
        image_mean=list(IMAGENET_MEAN),
        image_std=list(IMAGENET_STD),
    )


REFERENCES = {
    "resnet50": lambda: _hf(  # microsoft/resnet-50
        "ConvNextImageProcessorPil",
        "convnext.image_processing_pil_convnext",
        size={"shortest_edge": 224},
        crop_pct=0.875,
        resample=3,
        image_mean=list(IMAGENET_MEAN),
        image_std=list(IMAGENET_STD),
    ),
    "vit_b16_in21k": lambda: _hf(  # google/vit-base-patch16-224-in21k
        "ViTImageProcessorPil",
        "vit.image_processing_pil_vit",
        size={"height": 224, "width": 224},
        resample=2,
        image_mean=list(HALF),
        image_std=list(HALF),
    ),
    "dinov2_vitb14": lambda: _hf(  # facebook/dinov2-base
        "BitImageProcessorPil",
        "bit.image_processing_pil_bit",
        size={"shortest_edge": 256},
        crop_size={"height": 224, "width": 224},
        do_center_crop=True,
        resample=3,
        image_mean=list(IMAGENET_MEAN),
        image_std=list(IMAGENET_STD),
    ),
    "sam_vitb": lambda: _hf("SamImageProcessorPil", "sam.image_processing_pil_sam", **_SAM),
    "medsam_vitb": lambda: _hf("SamImageProcessorPil", "sam.image_processing_pil_sam", **_SAM),
    "mae_vitb16": _mae,
    "mae_vitb16_paper": _mae,
    "medclip_swint": _medclip,
    "clip_vitl14": lambda: _open_clip(__import__("open_clip").get_pretrained_cfg("ViT-L-14", "openai")),
    # hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224/open_clip_config.json, preprocess_cfg
    "biomedclip": lambda: _open_clip({"mean": OPENAI_MEAN, "std": OPENAI_STD}),
    "efficientnet_lite0": lambda: _timm("tf_efficientnet_lite0"),
    "efficientnet_lite2": lambda: _timm("tf_efficientnet_lite2"),
    "xmir_densenet121": lambda: _torchvision(224, "bilinear", IMAGENET_MEAN, IMAGENET_STD),
    # open_clip's own transform at the test model's size (OpenAI mean/std, bicubic, shortest side + crop)
    "tiny_clip": lambda: _open_clip({"size": 32, "mean": OPENAI_MEAN, "std": OPENAI_STD}),
    "tiny_cnn": lambda: _torchvision(32, "bilinear", HALF, HALF),
    "tiny_vit": lambda: _torchvision(32, "bicubic", HALF, HALF),
}


#: encoders that tests register on the fly (tests/reliability/test_bad_inputs.py: broken outputs on purpose)
TEST_ONLY = {"rel_nan_inf", "rel_wrong_dim"}


def test_every_registered_encoder_has_a_reference():
    assert {c.key for c in list_encoders()} - TEST_ONLY == set(REFERENCES)


@pytest.mark.parametrize("key", sorted(REFERENCES))
def test_preprocessing_equals_the_library(key, images):
    config = get_config(key)
    reference = REFERENCES[key]()
    for name, rgb in images.items():
        ours = preprocess_array(config, rgb)
        theirs = reference(rgb)
        assert ours.shape == theirs.shape == (3, config.input_size, config.input_size), name
        diff = (ours - theirs).abs().max().item()
        assert diff <= ATOL, f"{key} on {name}: max |ours - library| = {diff:.3g}"


def test_crop_offset_rule_matters_on_an_odd_margin(images):
    """The two centre-crop rules really differ on these images, so the equality above is a real check."""
    from dataclasses import replace

    cfg = get_config("biomedclip")
    rgb = images["xray_mosaic_254x250"]
    a = preprocess_array(cfg, rgb)
    b = preprocess_array(replace(cfg, crop_offset="floor"), rgb)
    assert not torch.allclose(a, b)
