"""Batched preprocessing on the model's device: ``uint8`` images at (near) native size → the model's
normalised float input, with torch ops derived from the :class:`EncoderConfig` fields.

The reference is :func:`cbir_pg.encoders.preprocess.preprocess_array` (PIL on the CPU, one image at a
time). This module reproduces it batched on any device, geometry step by geometry step:

- ``squash`` resizes to ``S x S``; ``shortest_crop`` resizes the shorter side to ``round(S / crop_pct)``
  and centre-crops; ``pad_square`` pastes on a black square first; ``longest_pad`` resizes the longer
  side to ``S`` and zero-pads bottom/right after normalising;
- the resize is PIL's: separable (horizontal pass, then vertical), antialiased filters of PIL's support
  (``F.interpolate(..., antialias=True)`` implements PIL's kernels; ``nearest`` is ``nearest-exact``),
  each pass rounded and clamped to ``uint8`` as PIL does;
- then ``x / 255``, ``(x - mean) / std`` as one fused multiply-add.

PIL's fixed-point arithmetic and libjpeg vs nvJPEG decoding leave differences of about one grey level;
``tests/unit/test_device_preprocess.py`` checks every registered encoder against the reference on real
images. Configs this module cannot reproduce (``lanczos``, or a field it does not know) are reported by
:func:`device_resize_supported`; ingest then resizes them with the reference on the CPU and only
normalises on the device.
"""

from __future__ import annotations

from dataclasses import dataclass

from cbir_pg.encoders.config import EncoderConfig

#: PIL filter → torch interpolation mode (PIL's nearest samples pixel centres: ``nearest-exact``)
_TORCH_MODES = {"nearest": "nearest-exact", "bilinear": "bilinear", "bicubic": "bicubic"}
_GEOMETRIES = ("squash", "shortest_crop", "pad_square", "longest_pad")


def device_resize_supported(config: EncoderConfig) -> bool:
    """Whether :class:`DevicePreprocessor` reproduces ``config``'s resize (else: resize on the CPU)."""
    return config.interpolation in _TORCH_MODES and config.resize in _GEOMETRIES


@dataclass(frozen=True)
class Geometry:
    """What happens to an ``h x w`` image: optional pad to a square (top, left, side), resize to
    ``(rh, rw)``, optional crop window ``(top, left, S)``; ``content`` is the (h, w) of real pixels in the
    ``S x S`` output (smaller only for ``longest_pad``)."""

    pad: tuple[int, int, int] | None
    resize: tuple[int, int]
    crop: tuple[int, int, int] | None
    content: tuple[int, int]


def geometry(config: EncoderConfig, h: int, w: int) -> Geometry:
    """The reference's geometry for an ``h x w`` image (same integer arithmetic as ``resize_array``)."""
    s = config.input_size
    mode = config.resize
    if mode == "squash":
        return Geometry(None, (s, s), None, (s, s))
    if mode == "shortest_crop":
        short = int(round(s / config.crop_pct))
        scale = short / min(w, h)
        rw, rh = max(short, round(w * scale)), max(short, round(h * scale))
        return Geometry(None, (rh, rw), (max(0, (rh - s) // 2), max(0, (rw - s) // 2), s), (s, s))
    if mode == "pad_square":
        side = max(w, h)
        return Geometry(((side - h) // 2, (side - w) // 2, side), (s, s), None, (s, s))
    if mode == "longest_pad":
        scale = s / max(w, h)
        nw, nh = max(1, int(w * scale + 0.5)), max(1, int(h * scale + 0.5))
        return Geometry(None, (nh, nw), None, (nh, nw))
    raise ValueError(f"{config.key}: resize mode {mode!r} has no device implementation")


class DevicePreprocessor:
    """``uint8`` images (``(N, H, W, 3)`` or ``(N, 3, H, W)``, any device) → ``float32 (N, 3, S, S)`` on
    ``device``, normalised per ``config``. Images of different sizes go in as separate groups."""

    def __init__(self, config: EncoderConfig, device: str = "cpu", uint8_resize: bool | None = None):
        import torch

        self.config = config
        self.device = device
        self.resize_on_device = device_resize_supported(config)
        #: resize ``uint8`` images with torch's ``uint8`` kernels (CPU only: a port of PIL's resampling,
        #: bit-exact for bilinear and an order of magnitude faster than float); else float passes
        self.uint8_resize = (not str(device).startswith("cuda")) if uint8_resize is None else uint8_resize
        std = torch.tensor(config.std, dtype=torch.float32)
        mean = torch.tensor(config.mean, dtype=torch.float32)
        self._scale = (1.0 / (255.0 * std)).view(1, 3, 1, 1).to(device)
        self._shift = (-mean / std).view(1, 3, 1, 1).to(device)

    # ------------------------------------------------------------------ pieces
    def _resize_pass(self, x, size: tuple[int, int]):
        """One PIL-style pass (only one of the two sides changes): filter in float, round, clamp."""
        import torch.nn.functional as F

        mode = _TORCH_MODES[self.config.interpolation]
        if mode == "nearest-exact":
            return F.interpolate(x, size=size, mode=mode)
        y = F.interpolate(x, size=size, mode=mode, align_corners=False, antialias=True)
        return y.round_().clamp_(0.0, 255.0)

    def _resize(self, x, size: tuple[int, int]):
        h, w = x.shape[-2:]
        if (h, w) == tuple(size):
            return x
        if x.dtype != self._scale.dtype:  # uint8: torch's port of PIL's resampling, both passes
            import torch.nn.functional as F

            mode = _TORCH_MODES[self.config.interpolation]
            if mode == "nearest-exact":
                return F.interpolate(x, size=size, mode=mode)
            return F.interpolate(x, size=size, mode=mode, align_corners=False, antialias=True)
        rh, rw = size
        if rw != w:  # PIL: horizontal pass first, into a uint8 image
            x = self._resize_pass(x, (h, rw))
        if rh != h:
            x = self._resize_pass(x, (rh, rw))
        return x

    def sized(self, x_uint8):
        """Resize a group of same-size ``uint8`` images (NCHW or NHWC) per the config's geometry;
        returns ``(N, 3, rh, rw)`` whole grey levels (``uint8``, or float on CUDA) and the content (h, w)."""
        import torch
        import torch.nn.functional as F

        x = x_uint8.to(self.device, non_blocking=True)
        if x.shape[-1] == 3 and x.shape[1] != 3:
            x = x.permute(0, 3, 1, 2)  # NHWC memory: channels-last, the layout the uint8 kernels want
        if not self.uint8_resize:
            x = x.to(torch.float32)
        g = geometry(self.config, int(x.shape[2]), int(x.shape[3]))
        if g.pad is not None:
            top, left, side = g.pad
            h, w = x.shape[2], x.shape[3]
            x = F.pad(x, (left, side - w - left, top, side - h - top))
        x = self._resize(x, g.resize)
        if g.crop is not None:
            top, left, s = g.crop
            h, w = x.shape[2], x.shape[3]
            if top + s > h or left + s > w:  # PIL's crop outside the image is black
                x = F.pad(x, (0, max(0, left + s - w), 0, max(0, top + s - h)))
            x = x[:, :, top : top + s, left : left + s]
        return x, g.content

    def normalise(self, x, content: tuple[int, int] | None = None):
        """Float grey levels (or ``uint8``) ``(N, 3, h, w)`` → normalised ``(N, 3, S, S)``; content
        smaller than ``S`` is zero-padded bottom/right after normalising (``longest_pad``)."""
        import torch
        import torch.nn.functional as F

        x = x.to(self.device, non_blocking=True)
        x = torch.addcmul(self._shift, x.to(torch.float32), self._scale)
        s = self.config.input_size
        h, w = x.shape[2], x.shape[3]
        if (h, w) != (s, s):
            x = F.pad(x, (0, s - w, 0, s - h))
        if self.config.channels_last:  # the layout the model runs in (Encoder.to_device): no second copy
            return x.contiguous(memory_format=torch.channels_last)
        return x.contiguous()

    def __call__(self, x_uint8):
        """One group of same-size ``uint8`` images → the model's input."""
        if not self.resize_on_device:
            raise ValueError(
                f"{self.config.key}: resize {self.config.interpolation} on the device is not supported"
            )
        x, _ = self.sized(x_uint8)
        return self.normalise(x)


def reference_batch(config: EncoderConfig, images) -> object:
    """The CPU reference for a list of RGB ``uint8`` HWC arrays, stacked: ``(N, 3, S, S)`` float32."""
    import torch

    from cbir_pg.encoders.preprocess import preprocess_array

    return torch.stack([preprocess_array(config, im) for im in images])
