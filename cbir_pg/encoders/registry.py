"""The encoder registry: each family module registers a builder under a stable key with its config.

Family modules (``efficientnet``, ``hf``, ...) import this module and register themselves; the package
``cbir_pg/encoders/__init__.py`` imports them; this module imports no family (see :mod:`cbir_pg.registry`).
Image-text models also register their text tower (``TEXT_TOWERS``), which text-to-image search uses.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from cbir_pg.encoders.config import EncoderConfig
from cbir_pg.errors import NotFoundError
from cbir_pg.registry import Registry

#: builder(config, weights_path_or_None, pretrained) -> torch.nn.Module whose forward gives (B, dim)
Builder = Callable[..., object]
#: text_builder(config, weights_path_or_None, pretrained) -> a tower whose call on list[str] gives
#: (B, dim) in the same space as the image tower (the model's own tokenizer inside)
TextBuilder = Callable[..., object]


@dataclass(frozen=True)
class Entry:
    config: EncoderConfig
    build: Builder


ENCODERS: Registry[Entry] = Registry("encoder", error=NotFoundError, hint=" (see: cbir-pg models list)")
TEXT_TOWERS: Registry[TextBuilder] = Registry("text tower", error=NotFoundError)


def register_encoder(config: EncoderConfig) -> Callable[[Builder], Builder]:
    """Decorator: ``@register_encoder(EncoderConfig(key=..., ...))`` on a builder function."""

    def wrap(fn: Builder) -> Builder:
        ENCODERS.add(config.key, Entry(config, fn))
        return fn

    return wrap


def register_text_tower(key: str) -> Callable[[TextBuilder], TextBuilder]:
    """Decorator: record the text tower of the already registered image-text encoder ``key``."""

    def wrap(fn: TextBuilder) -> TextBuilder:
        if key not in ENCODERS:
            raise ValueError(f"register the image tower of {key!r} before its text tower")
        TEXT_TOWERS.add(key, fn)
        return fn

    return wrap


def entry(key: str) -> Entry:
    return ENCODERS.get(key)


def model_not_stored(key: str) -> NotFoundError:
    """The error for a model with no row in ``cbir.encoder``: a registered key has no vectors yet (say
    how to make them); anything else is a typo (list the valid keys)."""
    if key in ENCODERS:
        return NotFoundError(f"no vectors for {key} yet: run cbir-pg ingest --model {key}")
    from cbir_pg.registry import did_you_mean

    known = ", ".join(sorted(ENCODERS.keys()))
    return NotFoundError(f"unknown model {key!r}{did_you_mean(key, ENCODERS.keys())}; valid keys: {known}")


def get_config(key: str) -> EncoderConfig:
    return entry(key).config


def list_encoders() -> list[EncoderConfig]:
    return [e.config for e in ENCODERS.values()]


def has_text_tower(key: str) -> bool:
    return key in TEXT_TOWERS


def text_tower_keys() -> list[str]:
    """The encoders with a text tower (text-to-image search, zero-shot evaluation)."""
    return TEXT_TOWERS.keys()
