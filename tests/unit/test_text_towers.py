"""Text towers of image-text encoders (cbir_pg/encoders/text.py): the registry records which models have
one, tiny_clip (open_clip CLIP built from a config in code, seeded random weights) embeds text in the
space of its image tower, BiomedCLIP reaches its one-line missing-weights error offline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


def test_registry_records_the_text_towers() -> None:
    from cbir_pg.encoders.registry import has_text_tower, text_tower_keys

    keys = text_tower_keys()
    assert {"biomedclip", "clip_vitl14", "tiny_clip"} <= set(keys)
    assert "efficientnet_lite0" not in keys and not has_text_tower("efficientnet_lite0")


def test_other_models_refuse_with_one_line() -> None:
    from cbir_pg.encoders.text import create_text_encoder
    from cbir_pg.errors import ConfigError

    with pytest.raises(ConfigError, match="has no text tower") as exc:
        create_text_encoder("efficientnet_lite0")
    assert "\n" not in str(exc.value) and "biomedclip" in str(exc.value)


def test_tiny_clip_text_and_image_towers_share_one_seeded_model() -> None:
    import torch

    from cbir_pg.encoders import create_encoder, embed_arrays
    from cbir_pg.encoders.text import create_text_encoder, embed_texts
    from cbir_pg.errors import InputError

    te = create_text_encoder("tiny_clip")
    texts = ["an x-ray image of pneumonia in the chest", "an ultrasound image of normal in the breast"]
    t1, t2 = embed_texts(te, texts), embed_texts(create_text_encoder("tiny_clip"), texts)
    assert t1.shape == (2, 32) and np.allclose(np.linalg.norm(t1, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(t1, t2, atol=1e-6)  # a pure function of the seed
    assert not np.allclose(t1[0], t1[1])
    # the reference: open_clip's own CLIP built from the same config and seed, encode_text
    import open_clip

    from cbir_pg.encoders.openclip import TINY_CLIP

    torch.manual_seed(0)
    ref = open_clip.CLIP(**TINY_CLIP).eval()
    tok = open_clip.tokenizer.SimpleTokenizer(context_length=TINY_CLIP["text_cfg"]["context_length"])
    with torch.inference_mode():
        r = ref.encode_text(tok(texts)).numpy()
        img = np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8)
        enc = create_encoder("tiny_clip")
        x = enc.preprocess(img)[None]
        ri = ref.encode_image(x).numpy()
    np.testing.assert_allclose(t1, r / np.linalg.norm(r, axis=1, keepdims=True), atol=1e-5)
    np.testing.assert_allclose(embed_arrays(enc, [img])[0], ri[0] / np.linalg.norm(ri[0]), atol=1e-5)
    with pytest.raises(InputError, match="empty"):
        embed_texts(te, ["  "])


def test_biomedclip_text_tower_reaches_the_missing_weights_error(tmp_path: Path, monkeypatch) -> None:
    from cbir_pg.encoders.text import create_text_encoder
    from cbir_pg.errors import WeightsMissingError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsMissingError, match="BiomedCLIP") as exc:
        create_text_encoder("biomedclip")
    assert "\n" not in str(exc.value)
    # --weights FILE: the checkpoint is taken from the file; offline, BiomedBERT's config and tokenizer are
    # not in the HF cache, which is again one line naming the missing weights
    import torch

    ckpt = tmp_path / "open_clip_pytorch_model.bin"
    torch.save({"logit_scale": torch.tensor(1.0)}, ckpt)
    with pytest.raises(WeightsMissingError) as exc:
        create_text_encoder("biomedclip", weights=ckpt)
    assert "\n" not in str(exc.value)
