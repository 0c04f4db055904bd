"""Pixels → model input: one function of the frozen config, so DataLoader workers need only the config.

Resizing uses PIL on the RGB ``uint8`` array, as the Hugging Face image processors (their PIL backend,
the only one in transformers 4.x, which the paper's code used) and open_clip's / timm's torchvision
transforms do; then scale to [0, 1] and normalise with the config's mean/std. Every step is a field of
:class:`EncoderConfig` (``resize``, ``crop_pct``, ``crop_offset``, ``interpolation``, ``mean``, ``std``),
so any other implementation (e.g. a batched one on the GPU) can follow the same rule.
``tests/unit/test_preprocess_equality.py`` checks each registered encoder against its library's own
processor or transform on real images.
"""

from __future__ import annotations

import numpy as np

from cbir_pg.encoders.config import EncoderConfig

_PIL_FILTERS = {"nearest": 0, "bilinear": 2, "bicubic": 3, "lanczos": 1}


def _resize(img, size: tuple[int, int], interpolation: str):
    return img.resize(size, resample=_PIL_FILTERS[interpolation])


def _center_crop(img, s: int, offset: str = "floor"):
    w, h = img.size
    if offset == "round":  # torchvision.transforms.functional.center_crop
        left, top = int(round((w - s) / 2.0)), int(round((h - s) / 2.0))
    else:  # transformers.image_transforms.center_crop
        left, top = (w - s) // 2, (h - s) // 2
    return img.crop((max(0, left), max(0, top), max(0, left) + s, max(0, top) + s))


def resize_array(config: EncoderConfig, rgb: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
    """Resize per ``config.resize``; returns the uint8 array and the (h, w) of real content
    (smaller than the array only for ``longest_pad``, whose padding is added after normalising)."""
    from PIL import Image

    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an RGB uint8 array (H, W, 3), got {rgb.dtype} {rgb.shape}")
    s = config.input_size
    img = Image.fromarray(rgb)
    w, h = img.size
    mode = config.resize
    if mode == "squash":
        img = _resize(img, (s, s), config.interpolation)
    elif mode == "shortest_crop":
        # transformers' get_resize_output_image_size and torchvision's Resize(int) agree: the shorter
        # side becomes ``short``, the longer ``int(short * long / shorter)`` (truncated, not rounded)
        short = int(s / config.crop_pct)  # math.floor in timm, int() in transformers
        size = (short, int(short * h / w)) if w <= h else (int(short * w / h), short)
        img = _resize(img, size, config.interpolation)
        img = _center_crop(img, s, config.crop_offset)
    elif mode == "pad_square":
        side = max(w, h)
        canvas = Image.new("RGB", (side, side), (0, 0, 0))
        canvas.paste(img, ((side - w) // 2, (side - h) // 2))
        img = _resize(canvas, (s, s), config.interpolation)
    elif mode == "longest_pad":
        scale = s / max(w, h)
        nw, nh = max(1, int(w * scale + 0.5)), max(1, int(h * scale + 0.5))
        img = _resize(img, (nw, nh), config.interpolation)
        return np.asarray(img), (nh, nw)
    return np.asarray(img), (s, s)


def preprocess_array(config: EncoderConfig, rgb: np.ndarray):
    """RGB uint8 (H, W, 3) → normalised float32 tensor (3, S, S)."""
    import torch

    arr, (h, w) = resize_array(config, rgb)
    x = arr.astype(np.float32) / 255.0
    x = (x - np.asarray(config.mean, np.float32)) / np.asarray(config.std, np.float32)
    s = config.input_size
    if x.shape[0] != s or x.shape[1] != s:  # longest_pad: zero padding bottom/right, after normalising
        out = np.zeros((s, s, 3), np.float32)
        out[:h, :w] = x
        x = out
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))
