"""The linear probe learns a separable toy problem, is seeded, and stops early on the val loss."""

from __future__ import annotations

import numpy as np
import pytest

from cbir_pg.eval.linear import train_linear_probe


def _blobs(n: int, seed: int, classes=(4, 9, 17)) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = np.eye(8)[: len(classes)] * 4.0
    y = rng.choice(classes, n)
    idx = np.searchsorted(classes, y)
    return (centres[idx] + 0.3 * rng.normal(size=(n, 8))).astype(np.float32), y


def test_learns_a_separable_problem():
    Xt, yt = _blobs(600, 0)
    Xv, yv = _blobs(150, 1)
    Xs, ys = _blobs(150, 2)
    probe = train_linear_probe(Xt, yt, Xv, yv, lr=0.05, batch_size=64, max_epochs=30, patience=10)
    assert probe.classes.tolist() == [4, 9, 17]
    assert np.mean(probe.predict(Xs) == ys) == 1.0
    p = probe.scores(Xs)
    assert p.shape == (150, 3) and np.allclose(p.sum(1), 1.0)
    assert probe.val_loss[probe.best_epoch - 1] == min(probe.val_loss)
    assert probe.val_loss[-1] < probe.val_loss[0]


def test_stops_early_and_restores_the_best_epoch():
    Xt, yt = _blobs(400, 0)
    Xv, _ = _blobs(120, 1)
    # validation labels that disagree with the training clusters: the val loss rises as training
    # sharpens the clusters, so training must stop `patience` epochs after the best epoch
    rng = np.random.default_rng(3)
    yv = rng.choice([4, 9, 17], 120)
    probe = train_linear_probe(Xt, yt, Xv, yv, lr=0.05, batch_size=64, max_epochs=200, patience=5, seed=1)
    assert probe.stopped_early
    assert probe.epochs_run < 200
    assert probe.epochs_run == probe.best_epoch + 5
    assert len(probe.val_loss) == probe.epochs_run
    assert probe.val_loss[probe.best_epoch - 1] == min(probe.val_loss)


def test_is_seeded():
    Xt, yt = _blobs(300, 0)
    Xv, yv = _blobs(60, 1)
    a = train_linear_probe(Xt, yt, Xv, yv, seed=7, max_epochs=5)
    b = train_linear_probe(Xt, yt, Xv, yv, seed=7, max_epochs=5)
    c = train_linear_probe(Xt, yt, Xv, yv, seed=8, max_epochs=5)
    assert np.array_equal(a.weight, b.weight)
    assert not np.array_equal(a.weight, c.weight)


def test_needs_two_classes():
    X, _ = _blobs(20, 0)
    with pytest.raises(ValueError):
        train_linear_probe(X, np.zeros(20), X, np.zeros(20))


def test_paper_rule_initialises_normal_001_and_stops_on_val_accuracy():
    """``rule="paper"`` (src/linear_probing.py): N(0, 0.01) weights, zero bias, best epoch = first epoch
    with the highest val accuracy, stop ``patience`` epochs after it; the val loss plays no part."""
    Xt, yt = _blobs(600, 0)
    Xv, yv = _blobs(150, 1)
    init = train_linear_probe(Xt, yt, Xv, yv, rule="paper", max_epochs=0, seed=4)
    assert init.weight.shape == (3, 8) and np.all(init.bias == 0)
    assert 0.005 < init.weight.std() < 0.02 and abs(init.weight.mean()) < 0.01
    default = train_linear_probe(Xt, yt, Xv, yv, max_epochs=0, seed=4)
    assert default.weight.std() > 0.1  # torch's default init: U(-1/sqrt(8), 1/sqrt(8))

    # separable: val accuracy reaches 1.0 early and cannot improve strictly, while the loss keeps falling
    paper = train_linear_probe(
        Xt, yt, Xv, yv, lr=0.05, batch_size=64, max_epochs=60, patience=5, rule="paper"
    )
    loss = train_linear_probe(Xt, yt, Xv, yv, lr=0.05, batch_size=64, max_epochs=60, patience=5, rule="loss")
    acc = paper.val_accuracy
    assert paper.rule == "paper" and max(acc) == 1.0
    assert paper.best_epoch == acc.index(max(acc)) + 1  # the first epoch reaching the best accuracy
    assert paper.stopped_early and paper.epochs_run == paper.best_epoch + 5
    assert loss.best_epoch > paper.best_epoch  # the loss rule keeps going while the loss still falls
    with pytest.raises(ValueError, match="rule"):
        train_linear_probe(Xt, yt, Xv, yv, rule="accuracy")
