"""Why do two images match? Similarity maps for a (query, neighbour) pair under one encoder.

For each image of the pair, a map over the image *as the model sees it* (after the encoder's resize and
crop, :func:`cbir_pg.encoders.preprocess.resize_array`) says how much each region drives the cosine
similarity of the two embeddings, the other image held fixed:

* ``occlusion`` (model-agnostic): hide one cell of a ``grid`` x ``grid`` tiling at a time; a cell's value
  is the drop in similarity, ``s(x, y) - s(x with the cell hidden, y)`` (Zeiler & Fergus 2014).
* ``rise`` (model-agnostic): ``n_masks`` random smooth masks (RISE, Petsiuk et al. 2018: a random binary
  ``cells`` x ``cells`` grid with keep probability ``p``, upsampled bilinearly and randomly shifted);
  a pixel's value is the mean similarity of the masked images that keep it minus the mean of those that
  hide it, i.e. the expected drop in similarity when that pixel is hidden.
* ``gradients`` (differentiable towers, needs captum): integrated gradients (Sundararajan et al. 2017)
  of the cosine similarity with respect to the input, from the all-hidden baseline in ``steps`` steps,
  summed over colour channels.

"Hidden" means replaced by the encoder's normalisation mean (0 after normalising), the same baseline for
all three. All masked images of one map go through the encoder in batches of ``batch_size``.

Faithfulness (:func:`deletion_insertion`): the deletion curve hides the cells of a ``grid`` tiling
most-salient first and records the similarity after each step; the insertion curve starts from the
all-hidden image and reveals them in the same order. A faithful map has a low deletion area and a high
insertion area (Petsiuk et al. 2018); a random order is the baseline it must beat.

Maps are cached (:class:`MapCache`) under a key made of both images' pixel hashes, the encoder's config
hash, the method and its parameters, so a second view of the same pair costs one file read.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cbir_pg.errors import ConfigError
from cbir_pg.registry import Registry

if TYPE_CHECKING:
    from cbir_pg.encoders.base import Encoder

#: bump when a method's arithmetic changes: old cache entries are then never read
VERSION = "v1"


@dataclass(frozen=True)
class ExplainParams:
    """Every knob of a map; all of them are part of the cache key."""

    grid: int = 7  # occlusion: cells per side; also the cell grid of the deletion/insertion curves
    n_masks: int = 96  # rise: random masks
    cells: int = 6  # rise: the low-resolution mask grid
    p: float = 0.5  # rise: probability that a cell is kept
    steps: int = 16  # gradients: integration steps
    seed: int = 0  # rise: mask generator seed
    batch_size: int = 32  # masked images per forward pass (not in the key: it does not change the map)

    def __post_init__(self) -> None:
        checks = [
            (2 <= self.grid <= 32, "grid must be between 2 and 32"),
            (8 <= self.n_masks <= 4096, "n_masks must be between 8 and 4096"),
            (2 <= self.cells <= 32, "cells must be between 2 and 32"),
            (0.0 < self.p < 1.0, "p must be strictly between 0 and 1"),
            (2 <= self.steps <= 256, "steps must be between 2 and 256"),
            (1 <= self.batch_size <= 1024, "batch_size must be between 1 and 1024"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)

    def keyed(self, method: str) -> dict[str, object]:
        """The parameters that change ``method``'s map (the cache key's part)."""
        names = {"occlusion": ("grid",), "rise": ("n_masks", "cells", "p", "seed"), "gradients": ("steps",)}
        d = asdict(self)
        return {n: d[n] for n in names.get(method, ())}


@dataclass(frozen=True)
class PairMaps:
    """The two maps of one pair (``query_map`` over the query as the model sees it, ``neighbour_map``
    over the neighbour), both ``(S, S)`` float32 with S the encoder's input size; ``similarity`` is the
    cosine similarity of the unmasked pair; ``seconds`` the time the two maps took to compute (not to
    read from the cache: ``cached`` says which)."""

    method: str
    model: str
    params: dict[str, object]
    similarity: float
    query_map: np.ndarray
    neighbour_map: np.ndarray
    seconds: float
    cached: bool = False
    key: str = ""

    def as_json(self) -> dict[str, object]:
        return {
            "method": self.method,
            "model": self.model,
            "params": self.params,
            "similarity": self.similarity,
            "seconds": self.seconds,
            "cached": self.cached,
            "key": self.key,
            "size": int(self.query_map.shape[0]),
            "query_map": np.round(self.query_map.astype(np.float64), 6).tolist(),
            "neighbour_map": np.round(self.neighbour_map.astype(np.float64), 6).tolist(),
        }

    def npy(self) -> bytes:
        """Both maps as one ``(2, S, S)`` float32 ``.npy`` (0: query, 1: neighbour)."""
        buf = io.BytesIO()
        np.save(buf, np.stack([self.query_map, self.neighbour_map]).astype(np.float32))
        return buf.getvalue()


# --------------------------------------------------------------------------- the encoder side
class Similarity:
    """Cosine similarity of batches of model inputs to a fixed unit vector, batched through the encoder."""

    def __init__(self, encoder: Encoder, target: np.ndarray, batch_size: int = 32):
        self.encoder = encoder
        self.target = np.asarray(target, np.float32)
        self.batch_size = batch_size
        self.calls = 0

    def __call__(self, x) -> np.ndarray:
        """``x``: (B, 3, S, S) float tensor → (B,) similarities."""
        out = []
        for start in range(0, len(x), self.batch_size):
            raw = self.encoder.forward(x[start : start + self.batch_size]).float().cpu().numpy()
            norm = np.linalg.norm(raw, axis=1, keepdims=True)
            out.append((raw / np.maximum(norm, 1e-12)) @ self.target)
            self.calls += 1
        return np.concatenate(out).astype(np.float32)


def model_input(encoder: Encoder, rgb: np.ndarray):
    """The (3, S, S) normalised tensor the encoder sees."""
    return encoder.preprocess(rgb)


def model_view(encoder: Encoder, rgb: np.ndarray) -> np.ndarray:
    """The RGB uint8 (S, S, 3) image as the encoder sees it (resized, cropped; padding black)."""
    from cbir_pg.encoders.preprocess import resize_array

    arr, (h, w) = resize_array(encoder.config, rgb)
    s = encoder.config.input_size
    if arr.shape[:2] != (s, s):
        out = np.zeros((s, s, 3), np.uint8)
        out[:h, :w] = arr
        arr = out
    return np.ascontiguousarray(arr)


def embed_input(encoder: Encoder, x) -> np.ndarray:
    """Unit embedding of one (3, S, S) model input."""
    raw = encoder.forward(x[None]).float().cpu().numpy()[0]
    return (raw / max(float(np.linalg.norm(raw)), 1e-12)).astype(np.float32)


# --------------------------------------------------------------------------- the methods
MapFn = Callable[["Encoder", object, np.ndarray, ExplainParams], np.ndarray]
METHODS: Registry[MapFn] = Registry("explanation method", error=ConfigError)


def register_method(name: str) -> Callable[[MapFn], MapFn]:
    def wrap(fn: MapFn) -> MapFn:
        METHODS.add(name, fn)
        return fn

    return wrap


def list_methods() -> list[str]:
    return METHODS.keys()


def cell_masks(size: int, grid: int) -> np.ndarray:
    """``(grid*grid, size, size)`` float32 masks, 1 = kept, each hiding one cell of a ``grid`` tiling
    (cells in row-major order; edges split as evenly as integer pixels allow)."""
    edges = np.linspace(0, size, grid + 1).round().astype(int)
    masks = np.ones((grid * grid, size, size), np.float32)
    for r in range(grid):
        for c in range(grid):
            masks[r * grid + c, edges[r] : edges[r + 1], edges[c] : edges[c + 1]] = 0.0
    return masks


def cell_scores(saliency: np.ndarray, grid: int) -> np.ndarray:
    """The mean of a pixel map over each cell of a ``grid`` tiling, row-major (``grid*grid``,)."""
    size = saliency.shape[0]
    edges = np.linspace(0, size, grid + 1).round().astype(int)
    return np.array(
        [
            saliency[edges[r] : edges[r + 1], edges[c] : edges[c + 1]].mean()
            for r in range(grid)
            for c in range(grid)
        ],
        np.float64,
    )


def _apply(x, masks: np.ndarray):
    import torch

    return x[None] * torch.from_numpy(masks)[:, None, :, :]


@register_method("occlusion")
def occlusion_map(encoder: Encoder, x, target: np.ndarray, params: ExplainParams) -> np.ndarray:
    """Drop in similarity when each cell of a ``grid`` x ``grid`` tiling is hidden, painted over the cell."""
    size = int(x.shape[-1])
    sim = Similarity(encoder, target, params.batch_size)
    base = float(sim(x[None])[0])
    masks = cell_masks(size, params.grid)
    drops = base - sim(_apply(x, masks))
    hidden = 1.0 - masks  # exactly one cell per mask
    return np.tensordot(drops, hidden, axes=1).astype(np.float32)


def rise_masks(size: int, params: ExplainParams) -> np.ndarray:
    """RISE masks: ``n_masks`` random ``cells`` x ``cells`` binary grids (keep probability ``p``), each
    upsampled bilinearly to ``(cells + 1) * cell`` and cropped at a random shift to ``size``."""
    from PIL import Image

    rng = np.random.default_rng(params.seed)
    cell = int(np.ceil(size / params.cells))
    up = (params.cells + 1) * cell
    grids = (rng.random((params.n_masks, params.cells, params.cells)) < params.p).astype(np.float32)
    shifts = rng.integers(0, cell, size=(params.n_masks, 2))
    out = np.empty((params.n_masks, size, size), np.float32)
    for i in range(params.n_masks):
        im = Image.fromarray(grids[i], mode="F").resize((up, up), Image.Resampling.BILINEAR)
        a = np.asarray(im)
        dy, dx = shifts[i]
        out[i] = a[dy : dy + size, dx : dx + size]
    return np.clip(out, 0.0, 1.0)


@register_method("rise")
def rise_map(encoder: Encoder, x, target: np.ndarray, params: ExplainParams) -> np.ndarray:
    """Expected similarity with a pixel kept minus with it hidden, over ``n_masks`` RISE masks."""
    size = int(x.shape[-1])
    masks = rise_masks(size, params)
    sims = Similarity(encoder, target, params.batch_size)(_apply(x, masks)).astype(np.float64)
    kept = masks.astype(np.float64)
    hidden = 1.0 - kept
    e_kept = np.tensordot(sims, kept, axes=1) / np.maximum(kept.sum(0), 1e-6)
    e_hidden = np.tensordot(sims, hidden, axes=1) / np.maximum(hidden.sum(0), 1e-6)
    return (e_kept - e_hidden).astype(np.float32)


@register_method("gradients")
def gradients_map(encoder: Encoder, x, target: np.ndarray, params: ExplainParams) -> np.ndarray:
    """Integrated gradients (captum) of the cosine similarity to ``target``, from the all-hidden input,
    summed over colour channels. Needs a tower torch can differentiate (every registered encoder is)."""
    try:
        from captum.attr import IntegratedGradients
    except ImportError:
        raise ConfigError(
            "the gradients method needs captum: pip install 'cbir-pg[explain]' (or pip install captum)"
        ) from None
    import torch

    t = torch.from_numpy(np.asarray(target, np.float32)).to(encoder.device)

    def forward(batch):
        out = encoder.module(encoder.to_device(batch)).float()
        return torch.nn.functional.normalize(out, dim=1) @ t

    inp = x[None].clone().to(encoder.device)
    with torch.inference_mode(False), torch.enable_grad():
        attr = IntegratedGradients(forward).attribute(
            inp, baselines=torch.zeros_like(inp), n_steps=params.steps, internal_batch_size=params.batch_size
        )
    return attr[0].sum(0).detach().float().cpu().numpy().astype(np.float32)


# --------------------------------------------------------------------------- a pair, cached
def cache_key(
    query_hash: str, neighbour_hash: str, config_hash: str, method: str, params: ExplainParams
) -> str:
    text = json.dumps(
        {
            "q": query_hash,
            "n": neighbour_hash,
            "config": config_hash,
            "method": method,
            "params": params.keyed(method),
            "v": VERSION,
        },
        sort_keys=True,
    )
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class MapCache:
    """Maps on disk, one ``.npz`` per key, written once and atomically (a temporary file, then
    ``os.replace``); a read-only or missing folder just means no caching."""

    root: Path
    hits: int = field(default=0)

    def _path(self, key: str) -> Path:
        return Path(self.root) / key[:2] / f"{key}.npz"

    def get(self, key: str) -> dict[str, np.ndarray] | None:
        try:
            with np.load(self._path(key), allow_pickle=False) as z:
                out = {k: z[k] for k in z.files}
        except (OSError, ValueError, KeyError):
            return None
        self.hits += 1
        return out

    def put(self, key: str, **arrays: np.ndarray) -> None:
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        except OSError:
            return
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, **arrays)
            os.replace(tmp, path)
        except OSError:
            Path(tmp).unlink(missing_ok=True)


def explain_pair(
    encoder: Encoder,
    query_rgb: np.ndarray,
    neighbour_rgb: np.ndarray,
    method: str = "occlusion",
    *,
    params: ExplainParams | None = None,
    cache: MapCache | None = None,
) -> PairMaps:
    """The similarity maps of a pair: which regions of the query drive its similarity to the neighbour,
    and which regions of the neighbour drive its similarity to the query (the other image unmasked)."""
    from cbir_pg.images import pixel_hash

    fn = METHODS.get(method)
    params = params or ExplainParams()
    config = encoder.config
    key = cache_key(pixel_hash(query_rgb), pixel_hash(neighbour_rgb), config.config_hash(), method, params)
    if cache is not None:
        hit = cache.get(key)
        if hit is not None:
            return PairMaps(
                method,
                config.key,
                params.keyed(method),
                float(hit["similarity"]),
                hit["query_map"],
                hit["neighbour_map"],
                float(hit["seconds"]),
                cached=True,
                key=key,
            )
    t0 = time.perf_counter()
    xq, xn = model_input(encoder, query_rgb), model_input(encoder, neighbour_rgb)
    eq, en = embed_input(encoder, xq), embed_input(encoder, xn)
    qmap = fn(encoder, xq, en, params)
    nmap = fn(encoder, xn, eq, params)
    seconds = time.perf_counter() - t0
    similarity = float(eq @ en)
    if cache is not None:
        cache.put(
            key,
            query_map=qmap,
            neighbour_map=nmap,
            similarity=np.float64(similarity),
            seconds=np.float64(seconds),
        )
    return PairMaps(method, config.key, params.keyed(method), similarity, qmap, nmap, seconds, key=key)


# --------------------------------------------------------------------------- faithfulness
@dataclass(frozen=True)
class Curves:
    """Similarity after each step of hiding (deletion) or revealing (insertion) the cells of a
    ``grid`` tiling in one order; ``fractions[i]`` is the share of cells hidden/revealed after step i."""

    fractions: np.ndarray
    deletion: np.ndarray
    insertion: np.ndarray

    @property
    def deletion_auc(self) -> float:
        return auc(self.fractions, self.deletion)

    @property
    def insertion_auc(self) -> float:
        return auc(self.fractions, self.insertion)


def auc(x: np.ndarray, y: np.ndarray) -> float:
    """Area under the curve by the trapezoid rule."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2.0))


def curve_masks(size: int, grid: int, order: np.ndarray, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Deletion masks (1 = kept) after hiding the first ``round(f * n)`` cells of ``order`` for
    ``steps + 1`` evenly spaced fractions f from 0 to 1; returns (fractions, masks). The insertion
    masks are ``1 - masks``."""
    n = grid * grid
    cells = 1.0 - cell_masks(size, grid)  # 1 on the cell
    counts = np.unique(np.linspace(0, n, steps + 1).round().astype(int))
    out = np.ones((len(counts), size, size), np.float32)
    for i, k in enumerate(counts):
        if k:
            out[i] -= cells[np.asarray(order[:k])].sum(0)
    return counts / n, np.clip(out, 0.0, 1.0)


def deletion_insertion(
    encoder: Encoder,
    x,
    target: np.ndarray,
    order: np.ndarray,
    *,
    grid: int = 7,
    steps: int = 16,
    batch_size: int = 32,
) -> Curves:
    """Deletion and insertion curves of model input ``x`` against the unit vector ``target`` when the
    cells of a ``grid`` tiling are hidden / revealed in ``order`` (most salient first)."""
    size = int(x.shape[-1])
    fractions, masks = curve_masks(size, grid, order, steps)
    sim = Similarity(encoder, target, batch_size)
    deletion = sim(_apply(x, masks))
    insertion = sim(_apply(x, 1.0 - masks))
    return Curves(fractions, deletion.astype(np.float64), insertion.astype(np.float64))


def saliency_order(saliency: np.ndarray, grid: int) -> np.ndarray:
    """Cells most salient first (ties broken by cell index, so the order is deterministic)."""
    scores = cell_scores(saliency, grid)
    return np.lexsort((np.arange(len(scores)), -scores))


# --------------------------------------------------------------------------- drawing
def heat_rgb(values: np.ndarray) -> np.ndarray:
    """A map scaled to [0, 1] (negative values are 0: they lower the similarity) as a black-red-yellow-
    white ramp ("hot"), RGB uint8."""
    v = np.asarray(values, np.float64)
    top = float(np.max(v)) if v.size else 0.0
    u = np.clip(v / top, 0.0, 1.0) if top > 0 else np.zeros_like(v)
    r = np.clip(3 * u, 0, 1)
    g = np.clip(3 * u - 1, 0, 1)
    b = np.clip(3 * u - 2, 0, 1)
    return (np.stack([r, g, b], -1) * 255).round().astype(np.uint8)


def overlay(view: np.ndarray, saliency: np.ndarray, *, alpha: float = 0.55, side: int = 224) -> np.ndarray:
    """``view`` (the image as the model sees it) with the map blended on top, scaled up to ``side``
    pixels where smaller; where the map is at or below zero the image shows through unchanged."""
    from PIL import Image

    s = max(side, view.shape[0])
    im = np.asarray(Image.fromarray(view).resize((s, s), Image.Resampling.BILINEAR), np.float64)
    m = np.asarray(
        Image.fromarray(np.asarray(saliency, np.float32), mode="F").resize((s, s), Image.Resampling.BILINEAR),
        np.float64,
    )
    heat = heat_rgb(m).astype(np.float64)
    top = float(m.max()) if m.size else 0.0
    weight = (alpha * np.clip(m / top, 0, 1) if top > 0 else np.zeros_like(m))[..., None]
    return (im * (1 - weight) + heat * weight).round().astype(np.uint8)


def overlay_png(view: np.ndarray, saliency: np.ndarray, *, side: int = 224) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(overlay(view, saliency, side=side)).save(buf, format="PNG")
    return buf.getvalue()


def with_params(params: ExplainParams | None, **changes: object) -> ExplainParams:
    """``params`` (or the defaults) with the given fields changed, validated."""
    return replace(params or ExplainParams(), **{k: v for k, v in changes.items() if v is not None})


# --------------------------------------------------------------------------- from the database
@dataclass(frozen=True)
class Explained:
    """A pair's maps with the two images as the model sees them, ready to draw."""

    maps: PairMaps
    query_view: np.ndarray
    neighbour_view: np.ndarray

    def png(self) -> bytes:
        from PIL import Image

        a = overlay(self.query_view, self.maps.query_map)
        b = overlay(self.neighbour_view, self.maps.neighbour_map)
        gap = 8
        out = np.full((a.shape[0], a.shape[1] + gap + b.shape[1], 3), 255, np.uint8)
        out[:, : a.shape[1]] = a
        out[:, a.shape[1] + gap :] = b
        buf = io.BytesIO()
        Image.fromarray(out).save(buf, format="PNG")
        return buf.getvalue()

    def side_png(self, side: str) -> bytes:
        """The overlay of one image: ``query`` or ``neighbour``."""
        if side == "query":
            return overlay_png(self.query_view, self.maps.query_map)
        if side == "neighbour":
            return overlay_png(self.neighbour_view, self.maps.neighbour_map)
        raise ConfigError(f"side must be query or neighbour, got {side!r}")


def image_rgb(conn, ref: int | str | Path) -> np.ndarray:
    """A stored image's pixels (an int: its id) or a file's (a path), decoded by the one decode path."""
    if isinstance(ref, int):
        from cbir_pg.search import load_image_rgb

        return load_image_rgb(conn, ref)
    from cbir_pg.images import decode_file

    return decode_file(Path(ref))


def explain_images(
    db,
    query: int | str | Path,
    neighbour: int | str | Path,
    model: str,
    method: str = "occlusion",
    *,
    params: ExplainParams | None = None,
    cache: MapCache | None = None,
    encoder: Encoder | None = None,
) -> Explained:
    """Similarity maps for two images (stored ids or files) under ``model``'s stored encoder config
    (:func:`cbir_pg.search.stored_encoder`: the maps explain the vectors the search really compares).
    ``encoder`` skips building it again (the server keeps one per model)."""
    from cbir_pg.db import identifiers

    identifiers.check_key(model)
    METHODS.get(method)
    with db.connection(vector=False) as conn:
        q_rgb = image_rgb(conn, query)
        n_rgb = image_rgb(conn, neighbour)
        if encoder is None:
            from cbir_pg.search import stored_encoder

            encoder = stored_encoder(conn, model)
    maps = explain_pair(encoder, q_rgb, n_rgb, method, params=params, cache=cache)
    return Explained(maps, model_view(encoder, q_rgb), model_view(encoder, n_rgb))
