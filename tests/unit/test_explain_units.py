"""Similarity maps (cbir_pg/explain.py) on a model whose answer is known: an encoder that only looks at
the top-left quadrant of its input. Every method must put its weight there; occlusion and integrated
gradients exactly up to float rounding (nothing else changes the similarity), RISE in expectation. Plus the pieces: cell
tilings, deletion/insertion masks, areas, the cache key, the overlay."""

from __future__ import annotations

import numpy as np
import pytest

from cbir_pg.errors import ConfigError
from cbir_pg.explain import (
    ExplainParams,
    MapCache,
    auc,
    cache_key,
    cell_masks,
    cell_scores,
    curve_masks,
    deletion_insertion,
    embed_input,
    explain_pair,
    heat_rgb,
    list_methods,
    model_input,
    overlay,
    rise_masks,
    saliency_order,
)

S = 32  # tiny_cnn's input size
Q = 16  # the quadrant the model sees


def quadrant_encoder():
    """A differentiable 'encoder' whose embedding is the 4x4 average pool of the top-left quadrant
    (all three channels, 48 dims) plus a constant: pixels outside the quadrant never change it."""
    import torch
    from torch import nn

    from cbir_pg.encoders import get_config
    from cbir_pg.encoders.base import Encoder

    class Quadrant(nn.Module):
        def forward(self, x):
            tl = x[:, :, :Q, :Q]
            pooled = nn.functional.avg_pool2d(tl, 4).flatten(1)
            return torch.cat([pooled, torch.ones(len(x), 1, dtype=x.dtype)], 1)

    config = get_config("tiny_cnn")
    return Encoder(config=config, module=Quadrant().eval(), device="cpu")


def images(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:S, 0:S]
    a = np.clip(xx * 8 + rng.normal(0, 30, (S, S)), 0, 255).astype(np.uint8)
    b = np.clip(yy * 8 + rng.normal(0, 30, (S, S)), 0, 255).astype(np.uint8)
    return np.repeat(a[..., None], 3, 2), np.repeat(b[..., None], 3, 2)


def test_methods_are_registered():
    assert {"occlusion", "rise", "gradients"} <= set(list_methods())
    with pytest.raises(ConfigError, match="explanation method"):
        explain_pair(quadrant_encoder(), *images(), "lime")


@pytest.mark.parametrize("method", ["occlusion", "gradients"])
def test_exact_methods_see_only_the_quadrant(method):
    enc = quadrant_encoder()
    q, n = images()
    maps = explain_pair(enc, q, n, method, params=ExplainParams(grid=8, steps=32))
    for m in (maps.query_map, maps.neighbour_map):
        assert m.shape == (S, S) and np.isfinite(m).all()
        assert np.abs(m).max() > 1e-4  # the quadrant matters
        # grid 8 on 32 px: cells of 4 px, the quadrant is exactly the top-left 4x4 cells
        outside = max(np.abs(m[Q:, :]).max(), np.abs(m[:, Q:]).max())
        assert outside < 1e-6 < np.abs(m[:Q, :Q]).max()  # zero outside, up to float32 rounding


def test_rise_puts_its_weight_on_the_quadrant():
    enc = quadrant_encoder()
    q, n = images()
    maps = explain_pair(enc, q, n, "rise", params=ExplainParams(n_masks=512, cells=4))
    m = np.abs(maps.query_map)
    inside = m[:Q, :Q].mean()
    outside = np.concatenate([m[Q:, :].ravel(), m[:Q, Q:].ravel()]).mean()
    assert inside > 3 * outside


def test_occlusion_value_is_the_drop_when_that_cell_is_hidden():
    """Independently: hide one cell of the model input by slicing, embed, compare."""
    import torch

    enc = quadrant_encoder()
    q, n = images(1)
    maps = explain_pair(enc, q, n, "occlusion", params=ExplainParams(grid=8))
    xq, xn = model_input(enc, q), model_input(enc, n)
    tq, tn = embed_input(enc, xq), embed_input(enc, xn)
    s0 = float(tq @ tn)
    assert maps.similarity == pytest.approx(s0, abs=1e-6)
    for r, c in [(0, 0), (1, 2), (3, 3)]:
        x = xq.clone()
        x[:, r * 4 : r * 4 + 4, c * 4 : c * 4 + 4] = 0
        v = enc.forward(x[None]).numpy()[0]
        drop = s0 - float(v / np.linalg.norm(v) @ tn)
        assert maps.query_map[r * 4 + 1, c * 4 + 1] == pytest.approx(drop, abs=1e-5)
    assert isinstance(torch.zeros(1), torch.Tensor)


def test_integrated_gradients_are_complete():
    """Sundararajan et al.'s completeness: the attributions add up to s(x) - s(baseline)."""
    enc = quadrant_encoder()
    q, n = images(2)
    maps = explain_pair(enc, q, n, "gradients", params=ExplainParams(steps=128))
    xq, xn = model_input(enc, q), model_input(enc, n)
    tn = embed_input(enc, xn)
    s_x = float(embed_input(enc, xq) @ tn)
    s_base = float(embed_input(enc, xq * 0) @ tn)
    assert float(maps.query_map.sum()) == pytest.approx(s_x - s_base, rel=0.02, abs=1e-4)


def test_deletion_of_the_salient_cells_beats_random_on_the_quadrant_model():
    enc = quadrant_encoder()
    q, n = images(3)
    maps = explain_pair(enc, q, n, "occlusion", params=ExplainParams(grid=8))
    xq, tn = model_input(enc, q), embed_input(enc, model_input(enc, n))
    good = deletion_insertion(enc, xq, tn, saliency_order(maps.query_map, 8), grid=8, steps=16)
    rng = np.random.default_rng(0)
    rand = [deletion_insertion(enc, xq, tn, rng.permutation(64), grid=8, steps=16) for _ in range(3)]
    assert good.deletion[0] == pytest.approx(maps.similarity, abs=1e-5)  # nothing hidden yet
    assert good.deletion_auc < np.mean([c.deletion_auc for c in rand])
    assert good.insertion_auc > np.mean([c.insertion_auc for c in rand])
    assert good.insertion[-1] == pytest.approx(maps.similarity, abs=1e-5)  # all revealed
    assert good.deletion[-1] == pytest.approx(good.insertion[0], abs=1e-6)  # all hidden, both ways


def test_cell_tiling_covers_every_pixel_once():
    for size, grid in [(32, 7), (224, 7), (30, 4)]:
        hidden = 1 - cell_masks(size, grid)
        assert hidden.shape == (grid * grid, size, size)
        assert (hidden.sum(0) == 1).all()
    sal = np.zeros((32, 32))
    sal[27:, 27:] = 5.0
    scores = cell_scores(sal, 7)
    assert int(np.argmax(scores)) == 48 and scores[0] == 0
    assert saliency_order(sal, 7)[0] == 48


def test_curve_masks_hide_the_cells_in_order():
    order = np.array([3, 0, 1, 2])
    fractions, masks = curve_masks(8, 2, order, steps=4)
    assert fractions.tolist() == [0, 0.25, 0.5, 0.75, 1.0]
    assert masks[0].min() == 1.0 and masks[-1].max() == 0.0
    assert masks[1][4:, 4:].max() == 0.0 and masks[1][:4, :].min() == 1.0  # cell 3 = bottom right


def test_auc_is_the_trapezoid_rule():
    assert auc(np.array([0, 0.5, 1]), np.array([1, 1, 0])) == pytest.approx(0.75)
    x = np.linspace(0, 1, 11)
    assert auc(x, x) == pytest.approx(0.5)


def test_rise_masks_keep_about_p():
    m = rise_masks(32, ExplainParams(n_masks=256, cells=4, p=0.3, seed=1))
    assert m.shape == (256, 32, 32) and m.min() >= 0 and m.max() <= 1
    assert m.mean() == pytest.approx(0.3, abs=0.05)
    again = rise_masks(32, ExplainParams(n_masks=256, cells=4, p=0.3, seed=1))
    assert np.array_equal(m, again)


def test_params_are_checked_and_keyed_per_method():
    with pytest.raises(ConfigError, match="grid"):
        ExplainParams(grid=1)
    with pytest.raises(ConfigError, match="p must"):
        ExplainParams(p=1.0)
    p = ExplainParams()
    assert cache_key("a", "b", "c", "occlusion", p) == cache_key(
        "a", "b", "c", "occlusion", ExplainParams(n_masks=9)
    )
    assert cache_key("a", "b", "c", "occlusion", p) != cache_key(
        "a", "b", "c", "occlusion", ExplainParams(grid=5)
    )
    assert cache_key("a", "b", "c", "rise", p) != cache_key("a", "b", "c", "rise", ExplainParams(seed=1))
    assert cache_key("a", "b", "c", "rise", p) != cache_key("b", "a", "c", "rise", p)
    assert cache_key("a", "b", "c", "rise", p) != cache_key("a", "b", "d", "rise", p)


def test_cache_gives_the_same_maps_the_second_time(tmp_path):
    enc = quadrant_encoder()
    q, n = images()
    cache = MapCache(tmp_path)
    first = explain_pair(enc, q, n, "occlusion", cache=cache)
    second = explain_pair(enc, q, n, "occlusion", params=ExplainParams(batch_size=3), cache=cache)
    assert not first.cached and second.cached and cache.hits == 1
    assert np.array_equal(first.query_map, second.query_map)
    assert np.array_equal(first.neighbour_map, second.neighbour_map)
    assert second.similarity == first.similarity and second.seconds == first.seconds
    other = explain_pair(enc, q, n, "occlusion", params=ExplainParams(grid=4), cache=cache)
    assert not other.cached
    swapped = explain_pair(enc, n, q, "occlusion", cache=cache)
    assert not swapped.cached
    assert np.allclose(swapped.query_map, first.neighbour_map)


def test_overlay_marks_only_positive_regions():
    view = np.full((32, 32, 3), 100, np.uint8)
    sal = np.zeros((32, 32), np.float32)
    sal[:8, :8] = 1.0
    sal[24:, 24:] = -1.0
    out = overlay(view, sal, side=64)
    assert out.shape == (64, 64, 3)
    assert (out[:12, :12, 0] > 150).all()  # hot where the map is high
    assert (out[52:, 52:] == 100).all()  # a negative region shows the image unchanged
    h = heat_rgb(np.array([[0.0, 1.0]]))
    assert h[0, 0].tolist() == [0, 0, 0] and h[0, 1].tolist() == [255, 255, 255]
