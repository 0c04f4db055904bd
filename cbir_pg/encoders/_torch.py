"""Small torch helpers shared by the family modules (imported only inside builders)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


class Head(nn.Module):
    """Wrap a backbone and a function ``fn(backbone, x) -> (B, dim)`` that picks the embedding tensor."""

    def __init__(self, backbone: nn.Module, fn: Callable[[nn.Module, torch.Tensor], torch.Tensor]):
        super().__init__()
        self.backbone = backbone
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(self.backbone, x)


def load_state_file(path) -> dict[str, torch.Tensor]:
    """A state dict from ``.safetensors`` or a torch pickle (``weights_only``); unwraps ``state_dict``/``model``."""
    from pathlib import Path

    p = Path(path)
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(p))
    sd = torch.load(str(p), map_location="cpu", weights_only=True)
    for k in ("state_dict", "model", "model_state_dict"):
        if isinstance(sd, dict) and k in sd and isinstance(sd[k], dict):
            sd = sd[k]
    return sd


def with_checkpoint(
    config,
    weights,
    pretrained: bool,
    make: Callable[[], nn.Module],
    convert: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]],
) -> nn.Module:
    """``make()``'s network for a ``path:`` encoder: with ``pretrained``, the checkpoint (``--weights`` or
    the default place, see :func:`~cbir_pg.encoders.weights.required_checkpoint`) loaded strictly after
    ``convert`` renames its tensors; otherwise its random weights. The checkpoint is looked for before
    the network is built, so a missing one fails fast."""
    from cbir_pg.encoders.weights import required_checkpoint

    path = required_checkpoint(config, weights, pretrained)
    net = make()
    if path is not None:
        net.load_state_dict(convert(load_state_file(path)), strict=True)
    return net


def strip_prefixes(sd: dict[str, torch.Tensor], prefixes: tuple[str, ...]) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in sd.items():
        for p in prefixes:
            if k.startswith(p):
                k = k[len(p) :]
        out[k] = v
    return out


def under_prefix(sd: dict[str, torch.Tensor], prefix: str, what: str) -> dict[str, torch.Tensor]:
    """The tensors named ``prefix...``, the prefix removed; none is an error (``ValueError``: not a
    ``what`` checkpoint)."""
    out = {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}
    if not out:
        raise ValueError(f"no {prefix}* tensors: not a {what} checkpoint")
    return out
