"""Every paper encoder built with random weights of its real architecture, run on a real image: the
dimension and the pooling rule. Plus preprocessing, config hashes, registry errors, missing weights."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from cbir_pg.encoders import create_encoder, embed_arrays, get_config, list_encoders
from cbir_pg.errors import NotFoundError

PAPER_KEYS = [
    "resnet50",
    "vit_b16_in21k",
    "sam_vitb",
    "medsam_vitb",
    "clip_vitl14",
    "medclip_swint",
    "biomedclip",
    "mae_vitb16",
    "dinov2_vitb14",
    "xmir_densenet121",
    "efficientnet_lite0",
    "efficientnet_lite2",
]
DIMS = {
    "resnet50": 1000,
    "vit_b16_in21k": 768,
    "sam_vitb": 256,
    "medsam_vitb": 256,
    "clip_vitl14": 768,
    "medclip_swint": 512,
    "biomedclip": 512,
    "mae_vitb16": 768,
    "dinov2_vitb14": 768,
    "xmir_densenet121": 1024,
    "efficientnet_lite0": 1280,
    "efficientnet_lite2": 1280,
}


@pytest.fixture(scope="module")
def real_image() -> np.ndarray:
    """One real breast-ultrasound image (28 x 28 greyscale) through the project's decode path."""
    import io

    from conftest import require_data
    from PIL import Image

    from cbir_pg.images import decode_bytes

    arr = np.load(require_data() / "breastmnist.npz")["test_images"][0]
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return decode_bytes(buf.getvalue(), "breast.png")


def test_registry_has_every_paper_key_and_tiny_encoders():
    keys = {c.key: c for c in list_encoders()}
    for k, d in DIMS.items():
        assert keys[k].dim == d
    tiny = [c for c in keys.values() if c.family == "tiny"]
    assert tiny and all(8 <= c.dim <= 64 for c in tiny)


def _pool_check(key: str, enc, x: torch.Tensor, out: torch.Tensor) -> None:
    """Recompute the embedding from the backbone's named tensors: the pooling rule, independently."""
    m = enc.module
    with torch.inference_mode():
        if key == "resnet50":
            logits = m.backbone(pixel_values=x).logits
            assert logits.shape == (1, 1000) and torch.allclose(out, logits)
        elif key == "mae_vitb16":  # all 196 patches kept: CLS + 196 tokens
            hs = m.backbone(pixel_values=x, noise=torch.arange(196.0)[None]).last_hidden_state
            assert hs.shape == (1, 197, 768) and torch.allclose(out, hs[:, 0], atol=1e-5)
        elif key in ("vit_b16_in21k", "dinov2_vitb14"):
            hs = m.backbone(pixel_values=x).last_hidden_state
            assert hs.shape[1] > 1 and torch.allclose(out, hs[:, 0], atol=1e-5)
        elif key in ("sam_vitb", "medsam_vitb"):
            grid = m.backbone(pixel_values=x).last_hidden_state
            assert grid.shape == (1, 256, 64, 64)
            assert torch.allclose(out, grid.mean(dim=(2, 3)), atol=1e-5)
        elif key == "xmir_densenet121":
            f = m.backbone(x)
            assert f.shape == (1, 1024, 7, 7)
            assert torch.allclose(out, torch.relu(f).mean(dim=(2, 3)), atol=1e-5)
        elif key.startswith("efficientnet"):
            f = m.forward_features(x)
            assert f.shape[1] == 1280
            assert torch.allclose(out, f.mean(dim=(2, 3)), atol=1e-5)
        elif key == "medclip_swint":
            pooled = m.model(pixel_values=x).pooler_output
            assert pooled.shape == (1, 768) and m.projection_head.bias is None
            proj = m.projection_head(pooled)
            assert torch.allclose(out, proj / proj.norm(), atol=1e-5)
            assert torch.allclose(out.norm(), torch.tensor(1.0), atol=1e-5)
        elif key in ("clip_vitl14", "biomedclip"):
            assert torch.allclose(out, m(x), atol=1e-5)  # encode_image = visual(x), not normalised
            assert not torch.allclose(out.norm(), torch.tensor(1.0), atol=1e-3)


@pytest.mark.slow
@pytest.mark.parametrize("key", PAPER_KEYS)
def test_paper_encoder_random_weights_real_image(key, real_image):
    enc = create_encoder(key, pretrained=False)
    cfg = enc.config
    assert cfg.is_random and cfg.config_hash() != get_config(key).config_hash()
    x = enc.preprocess(real_image)[None]
    assert x.shape == (1, 3, cfg.input_size, cfg.input_size) and x.dtype == torch.float32
    out = enc.forward(x)
    assert out.shape == (1, DIMS[key]) and torch.isfinite(out).all()
    _pool_check(key, enc, x, out)
    if key == "mae_vitb16":  # masking off: the same image gives the same vector (the paper's code did not)
        assert torch.equal(out, enc.forward(x))
        assert enc.module.backbone.config.mask_ratio == 0.0
    del enc


def test_embed_arrays_unit_norm_and_seeded_tiny_encoders(real_image):
    a = embed_arrays(create_encoder("tiny_vit"), [real_image, real_image[:, ::-1].copy()])
    b = embed_arrays(create_encoder("tiny_vit"), [real_image])
    assert a.dtype == np.float32 and a.shape == (2, 32)
    assert np.allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-6)
    assert np.allclose(a[0], b[0], atol=1e-6)  # seeded: rebuilt encoder, same vector
    assert not np.allclose(a[0], a[1])


def test_preprocessing_follows_the_config(real_image):
    from cbir_pg.encoders.preprocess import preprocess_array

    grey = np.full((30, 60, 3), 128, np.uint8)
    sam = get_config("sam_vitb")
    x = preprocess_array(sam, grey)
    assert x.shape == (3, 1024, 1024)
    expect = (128 / 255 - np.array(sam.mean)) / np.array(sam.std)
    assert np.allclose(x[:, 0, 0].numpy(), expect, atol=1e-5)
    assert torch.all(x[:, 600:, :] == 0)  # longest side 1024, zero padding below the content
    dino = get_config("dinov2_vitb14")
    y = preprocess_array(dino, np.random.default_rng(0).integers(0, 255, (100, 300, 3), dtype=np.uint8))
    assert y.shape == (3, 224, 224)
    lite = preprocess_array(get_config("efficientnet_lite0"), np.zeros((28, 28, 3), np.uint8))
    assert torch.allclose(lite, torch.full_like(lite, -1.0))  # mean = std = 0.5


def test_config_hash_is_stable_and_sensitive():
    from dataclasses import replace

    cfg = get_config("efficientnet_lite0")
    code = "from cbir_pg.encoders import get_config; print(get_config('efficientnet_lite0').config_hash())"
    other = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert other == cfg.config_hash() and len(other) == 64
    assert replace(cfg, description="other words").config_hash() == cfg.config_hash()
    assert replace(cfg, interpolation="bilinear").config_hash() != cfg.config_hash()
    assert replace(cfg, crop_offset="floor").config_hash() != cfg.config_hash()
    assert replace(cfg, mean=(0.4, 0.5, 0.5)).config_hash() != cfg.config_hash()
    assert cfg.to_json()["config_hash"] == cfg.config_hash()


def test_mae_paper_masking_is_seeded_per_image(real_image):
    """``mae_vitb16_paper``: 75% of the patches masked, the mask a function of (seed, image) only."""
    paper = create_encoder("mae_vitb16_paper", pretrained=False)
    plain = create_encoder("mae_vitb16", pretrained=False)
    assert paper.module.backbone.config.mask_ratio == 0.75
    assert paper.config.config_hash() != plain.config.config_hash()
    a = paper.preprocess(real_image)
    b = paper.preprocess(np.ascontiguousarray(real_image[::-1]))
    ab = paper.forward(torch.stack([a, b]))
    ba = paper.forward(torch.stack([b, a]))
    assert torch.equal(ab[0], ba[1]) and torch.equal(ab[1], ba[0])  # any batch, any order
    assert torch.equal(ab, paper.forward(torch.stack([a, b])))  # any run
    assert not torch.allclose(ab[0], plain.forward(a[None])[0], atol=1e-3)  # masked is not unmasked
    from dataclasses import replace

    from cbir_pg.encoders.hf import build_mae

    other_seed = replace(paper.config, arch=(("mask_ratio", 0.75), ("mask_seed", 1)))
    torch.manual_seed(0)
    other = build_mae(other_seed, pretrained=False).eval()
    with torch.inference_mode():
        assert not torch.allclose(other(a[None])[0], ab[0], atol=1e-3)  # the seed chooses the mask


def test_unknown_key_is_a_clear_error():
    with pytest.raises(NotFoundError, match="unknown encoder 'resnet51'.*resnet50"):
        create_encoder("resnet51")


def test_missing_weights_is_one_line_and_does_not_hang(tmp_path):
    code = (
        "from cbir_pg.encoders import create_encoder\n"
        "from cbir_pg.errors import WeightsMissingError\n"
        "for k in ['resnet50', 'biomedclip', 'clip_vitl14', 'medsam_vitb', 'dinov2_vitb14', 'medclip_swint', 'xmir_densenet121']:\n"
        "    try:\n        create_encoder(k)\n    except WeightsMissingError as e:\n        print(e)\n"
    )
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "hf"),
        "CBIR_PG_HOME": str(tmp_path / "home"),
    }
    t = time.monotonic()
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 7 and time.monotonic() - t < 60
    assert "microsoft/resnet-50" in lines[0] and "hf download" in lines[0]
    assert "BiomedCLIP" in lines[1] and "medsam_vit_b.pth" in lines[3] and "--weights" in lines[3]


def test_missing_weights_fail_fast_without_hf_hub_offline(tmp_path):
    """No HF_HUB_OFFLINE and no hub (a closed local port as HF_ENDPOINT): the cache is checked first and
    the error names the unreachable endpoint, instead of the hub client's retries."""
    code = (
        "from cbir_pg.encoders import create_encoder\n"
        "from cbir_pg.errors import WeightsMissingError\n"
        "for k in ['resnet50', 'biomedclip']:\n"
        "    try:\n        create_encoder(k)\n    except WeightsMissingError as e:\n        print(e)\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(
        HF_HOME=str(tmp_path / "hf"), CBIR_PG_HOME=str(tmp_path / "home"), HF_ENDPOINT="http://127.0.0.1:9"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 2, r.stdout
    assert all("http://127.0.0.1:9 is unreachable" in line for line in lines)
    assert "microsoft/resnet-50" in lines[0] and "BiomedCLIP" in lines[1]


def test_medsam_checkpoint_names_map_onto_the_sam_encoder(tmp_path):
    """A segment_anything-format checkpoint loads through --weights, tensor for tensor."""
    from cbir_pg.encoders.hf import SA_PART_TO_HF, SA_PREFIX_TO_HF

    src = create_encoder("sam_vitb", pretrained=False, seed=3).module.backbone.state_dict()

    def to_sa(k: str) -> str:
        for a, b in SA_PART_TO_HF:
            k = k.replace(b, a)
        for a, b in SA_PREFIX_TO_HF:
            if k.startswith(b):
                k = a + k[len(b) :]
        return "image_encoder." + k

    ckpt = {to_sa(k): v for k, v in src.items()}
    ckpt["mask_decoder.x"] = torch.zeros(1)
    assert any(k.startswith("image_encoder.blocks.0.norm1") for k in ckpt)
    path = tmp_path / "medsam_vit_b.pth"
    torch.save(ckpt, path)
    enc = create_encoder("medsam_vitb", weights=path)
    got = enc.module.backbone.state_dict()
    assert all(torch.equal(got[k], v) for k, v in src.items())


def test_xmir_checkpoint_loads_through_wrappers_and_legacy_names(tmp_path):
    """An X-MIR checkpoint wrapped in ``module.`` with pre-0.4 torchvision names (``norm.1``) loads
    through --weights, tensor for tensor, beside a classifier that is not used."""
    import re

    from cbir_pg.errors import WeightsMissingError

    src = create_encoder("xmir_densenet121", pretrained=False, seed=3).module.backbone.state_dict()
    legacy = re.compile(r"(denselayer\d+\.(?:norm|conv))([12])\.(weight|bias|running_mean|running_var)$")
    # torchvision before 0.4 wrote norm.1 for norm1 and kept no num_batches_tracked
    ckpt = {
        "module.features." + legacy.sub(r"\1.\2.\3", k): v for k, v in src.items() if "num_batches" not in k
    }
    ckpt["module.classifier.weight"] = torch.zeros(3, 1024)
    assert any(".norm.1." in k for k in ckpt)
    path = tmp_path / "xmir.pth"
    torch.save({"state_dict": ckpt}, path)
    got = create_encoder("xmir_densenet121", weights=path).module.backbone.state_dict()
    assert got.keys() == src.keys()
    assert all(torch.equal(got[k], v) for k, v in src.items() if "num_batches" not in k)
    torch.save({"module.classifier.weight": torch.zeros(3, 1024)}, path)
    with pytest.raises(WeightsMissingError, match="not a DenseNet-121 checkpoint"):
        create_encoder("xmir_densenet121", weights=path)


def test_medclip_checkpoint_loads_the_vision_tower(tmp_path):
    """MedCLIP's ``pytorch_model.bin``: the ``vision_model.*`` tensors (its ``position_ids`` buffers
    dropped, the text tower ignored) load strictly into the Swin tower."""
    src = create_encoder("medclip_swint", pretrained=False, seed=3).module.state_dict()
    ckpt = {"vision_model." + k: v for k, v in src.items()}
    ckpt["vision_model.model.embeddings.position_ids"] = torch.arange(4)
    ckpt["text_model.x"] = torch.zeros(1)
    path = tmp_path / "pytorch_model.bin"
    torch.save(ckpt, path)
    got = create_encoder("medclip_swint", weights=tmp_path).module.state_dict()
    assert got.keys() == src.keys() and all(torch.equal(got[k], v) for k, v in src.items())


def test_efficientnet_weights_map_by_position_and_shape():
    from cbir_pg.encoders.efficientnet import map_in_order

    a = {"x": torch.zeros(2, 3), "y": torch.zeros(4)}
    assert list(map_in_order(a, {"p": torch.ones(2, 3), "q": torch.ones(4)})) == ["p", "q"]
    with pytest.raises(ValueError, match="does not fit"):
        map_in_order(a, {"p": torch.ones(4), "q": torch.ones(2, 3)})
