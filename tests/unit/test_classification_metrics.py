"""The Table-4 metrics agree with scikit-learn, and with hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score
from sklearn.preprocessing import label_binarize

from cbir_pg.eval.classification import (
    average_precision,
    classification_metrics,
    knn_metrics,
    roc_auc,
)


def test_hand_computed_binary_values():
    y = np.array([1, 0, 1, 0])
    s = np.array([0.9, 0.8, 0.7, 0.1])
    # ranks: P@1 = 1 (R=.5), P@3 = 2/3 (R=1) -> AP = .5*1 + .5*2/3
    assert average_precision(y, s) == pytest.approx(0.5 + 0.5 * 2 / 3)
    # pairs (pos, neg): (.9>.8) (.9>.1) (.7<.8) (.7>.1) -> 3/4
    assert roc_auc(y, s) == pytest.approx(0.75)
    assert math.isnan(average_precision(np.zeros(3), np.ones(3)))
    assert math.isnan(roc_auc(np.ones(3), np.arange(3.0)))


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("ties", [False, True])
def test_binary_metrics_agree_with_sklearn(seed, ties):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 300)
    y[:2] = [0, 1]
    s = rng.random(300) + 0.3 * y
    if ties:
        s = np.round(s * 5) / 5  # many tied scores
    assert average_precision(y, s) == pytest.approx(average_precision_score(y, s), abs=1e-12)
    assert roc_auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_multiclass_metrics_agree_with_sklearn(seed):
    rng = np.random.default_rng(seed)
    classes = [3, 7, 11, 20]
    n = 400
    y = rng.choice(classes, n)
    y[: len(classes)] = classes
    logits = rng.normal(size=(n, len(classes))) + 1.5 * label_binarize(y, classes=classes)
    scores = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    pred = np.asarray(classes)[scores.argmax(1)]
    m = classification_metrics(y, pred, scores, classes)
    ybin = label_binarize(y, classes=classes)
    assert m.f1_micro == pytest.approx(f1_score(y, pred, average="micro"))
    assert m.f1_macro == pytest.approx(f1_score(y, pred, average="macro"))
    assert m.auprc_micro == pytest.approx(average_precision_score(ybin, scores, average="micro"))
    assert m.auprc_macro == pytest.approx(average_precision_score(ybin, scores, average="macro"))
    assert m.auroc_micro == pytest.approx(roc_auc_score(ybin, scores, average="micro"))
    assert m.auroc_macro == pytest.approx(roc_auc_score(ybin, scores, average="macro"))
    # AUPRC is average precision, not ROC-AUC (the paper's code reported one under the other's name)
    assert m.auprc_macro != pytest.approx(m.auroc_macro)
    assert m.n == n
    assert set(m.per_class["auprc"]) == set(classes)


def test_f1_macro_counts_predicted_only_classes_like_sklearn():
    y = np.array([1, 1, 2, 2])
    pred = np.array([1, 3, 2, 2])
    m = classification_metrics(y, pred, np.eye(3)[[0, 2, 1, 1]], [1, 2, 3])
    assert m.f1_macro == pytest.approx(f1_score(y, pred, average="macro"))
    assert m.f1_micro == pytest.approx(0.75)


def test_knn_vote_fractions_agree_with_sklearn():
    rng = np.random.default_rng(5)
    classes = [0, 1, 2]
    y = rng.integers(0, 3, 200)
    y[:3] = classes
    # neighbours mostly carry the query's label
    neigh = np.where(rng.random((200, 9)) < 0.6, y[:, None], rng.integers(0, 3, (200, 9)))
    k = 7
    m = knn_metrics(y, neigh, classes, k)
    votes = np.stack([(neigh[:, :k] == c).sum(1) for c in classes], 1) / k
    ybin = label_binarize(y, classes=classes)
    assert m.auroc_macro == pytest.approx(roc_auc_score(ybin, votes, average="macro"))
    assert m.auprc_micro == pytest.approx(average_precision_score(ybin, votes, average="micro"))


def test_scores_shape_is_checked():
    with pytest.raises(ValueError):
        classification_metrics(np.array([0, 1]), np.array([0, 1]), np.zeros((2, 3)), [0, 1])
