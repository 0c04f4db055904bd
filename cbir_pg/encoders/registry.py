"""The encoder registry: each family module registers a builder under a stable key with its config."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from cbir_pg.encoders.config import EncoderConfig
from cbir_pg.errors import NotFoundError

#: builder(config, weights_path_or_None, pretrained) -> torch.nn.Module whose forward gives (B, dim)
Builder = Callable[..., object]


@dataclass(frozen=True)
class Entry:
    config: EncoderConfig
    build: Builder


_REGISTRY: dict[str, Entry] = {}


def register_encoder(config: EncoderConfig) -> Callable[[Builder], Builder]:
    """Decorator: ``@register_encoder(EncoderConfig(key=..., ...))`` on a builder function."""

    def wrap(fn: Builder) -> Builder:
        if config.key in _REGISTRY:
            raise ValueError(f"encoder {config.key!r} is registered twice")
        _REGISTRY[config.key] = Entry(config, fn)
        return fn

    return wrap


def _load_families() -> None:
    # importing the family modules registers their encoders; they import torch lazily
    from cbir_pg.encoders import efficientnet, hf, medclip, openclip, tiny, xmir  # noqa: F401


def entry(key: str) -> Entry:
    _load_families()
    if key not in _REGISTRY:
        known = ", ".join(sorted(_REGISTRY))
        raise NotFoundError(f"unknown encoder {key!r}; known encoders: {known} (see: cbir-pg models list)")
    return _REGISTRY[key]


def model_not_stored(key: str) -> NotFoundError:
    """The error for a model with no row in ``cbir.encoder``: a registered key has no vectors yet (say
    how to make them); anything else is a typo (list the valid keys)."""
    _load_families()
    if key in _REGISTRY:
        return NotFoundError(f"no vectors for {key} yet: run cbir-pg ingest --model {key}")
    known = ", ".join(sorted(_REGISTRY))
    return NotFoundError(f"unknown model {key!r}; valid keys: {known}")


def get_config(key: str) -> EncoderConfig:
    return entry(key).config


def list_encoders() -> list[EncoderConfig]:
    _load_families()
    return [e.config for e in _REGISTRY.values()]
