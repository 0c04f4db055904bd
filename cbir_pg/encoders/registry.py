"""The encoder registry: each family module registers a builder under a stable key with its config.

Family modules (``efficientnet``, ``hf``, ...) import this module and register themselves; the package
``cbir_pg/encoders/__init__.py`` imports them; this module imports no family (see :mod:`cbir_pg.registry`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from cbir_pg.encoders.config import EncoderConfig
from cbir_pg.errors import NotFoundError
from cbir_pg.registry import Registry

#: builder(config, weights_path_or_None, pretrained) -> torch.nn.Module whose forward gives (B, dim)
Builder = Callable[..., object]


@dataclass(frozen=True)
class Entry:
    config: EncoderConfig
    build: Builder


ENCODERS: Registry[Entry] = Registry("encoder", error=NotFoundError, hint=" (see: cbir-pg models list)")


def register_encoder(config: EncoderConfig) -> Callable[[Builder], Builder]:
    """Decorator: ``@register_encoder(EncoderConfig(key=..., ...))`` on a builder function."""

    def wrap(fn: Builder) -> Builder:
        ENCODERS.add(config.key, Entry(config, fn))
        return fn

    return wrap


def entry(key: str) -> Entry:
    return ENCODERS.get(key)


def get_config(key: str) -> EncoderConfig:
    return entry(key).config


def list_encoders() -> list[EncoderConfig]:
    return [e.config for e in ENCODERS.values()]
