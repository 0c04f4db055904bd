"""The encoder registry: each family module registers a builder under a stable key with its config."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from cbir_pg.encoders.config import EncoderConfig
from cbir_pg.errors import NotFoundError

#: builder(config, weights_path_or_None, pretrained) -> torch.nn.Module whose forward gives (B, dim)
Builder = Callable[..., object]


#: text_builder(config, weights_path_or_None, pretrained) -> torch.nn.Module whose forward(list[str]) gives
#: (B, dim) in the same space as the image tower (the model's own tokenizer inside)
TextBuilder = Callable[..., object]


@dataclass(frozen=True)
class Entry:
    config: EncoderConfig
    build: Builder
    build_text: TextBuilder | None = None  # image-text models only (open_clip): the text tower

    @property
    def has_text_tower(self) -> bool:
        return self.build_text is not None


_REGISTRY: dict[str, Entry] = {}


def register_encoder(config: EncoderConfig) -> Callable[[Builder], Builder]:
    """Decorator: ``@register_encoder(EncoderConfig(key=..., ...))`` on a builder function."""

    def wrap(fn: Builder) -> Builder:
        if config.key in _REGISTRY:
            raise ValueError(f"encoder {config.key!r} is registered twice")
        _REGISTRY[config.key] = Entry(config, fn)
        return fn

    return wrap


def register_text_tower(key: str) -> Callable[[TextBuilder], TextBuilder]:
    """Decorator: record the text tower of the already registered image-text encoder ``key``."""

    def wrap(fn: TextBuilder) -> TextBuilder:
        if key not in _REGISTRY:
            raise ValueError(f"register the image tower of {key!r} before its text tower")
        if _REGISTRY[key].build_text is not None:
            raise ValueError(f"encoder {key!r} has two text towers")
        _REGISTRY[key] = replace(_REGISTRY[key], build_text=fn)
        return fn

    return wrap


def text_tower_keys() -> list[str]:
    """The encoders with a text tower (text-to-image search, zero-shot evaluation)."""
    _load_families()
    return sorted(k for k, e in _REGISTRY.items() if e.has_text_tower)


def _load_families() -> None:
    # importing the family modules registers their encoders; they import torch lazily
    from cbir_pg.encoders import efficientnet, hf, medclip, openclip, tiny, xmir  # noqa: F401


def entry(key: str) -> Entry:
    _load_families()
    if key not in _REGISTRY:
        known = ", ".join(sorted(_REGISTRY))
        raise NotFoundError(f"unknown encoder {key!r}; known encoders: {known} (see: cbir-pg models list)")
    return _REGISTRY[key]


def get_config(key: str) -> EncoderConfig:
    return entry(key).config


def list_encoders() -> list[EncoderConfig]:
    _load_families()
    return [e.config for e in _REGISTRY.values()]
