"""P@N, micro and macro exactly as the paper's code computes them: hand-computed cases and a property test
against an independent implementation (per-query loop plus a pandas groupby, as in
``evaluate_retrieval.py`` of Denner et al.)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cbir_pg.eval import metrics


def test_hand_computed_fewer_index_images_than_n_and_missing_class():
    # class 1: 5 index images; class 2: 2 index images (< N); class 3: none in the index
    relevant = np.array(
        [
            [1, 0, 1, 1, 0],  # class 1
            [0, 1, 0, 0, 0],  # class 1
            [1, 1, 0, 0, 0],  # class 2: n = min(N, 2)
            [0, 0, 0, 0, 0],  # class 3: undefined, left out
        ],
        dtype=bool,
    )
    sizes = np.array([5, 5, 2, 0])
    labels = np.array([1, 1, 2, 3])
    s = metrics.summarise(relevant, sizes, labels, (5, 1, 3))
    assert s.ns == (1, 3, 5)
    np.testing.assert_allclose(s.per_query[0], [1, 2 / 3, 3 / 5])
    np.testing.assert_allclose(s.per_query[1], [0, 1 / 3, 1 / 5])
    np.testing.assert_allclose(s.per_query[2], [1, 1, 1])  # 2 of the top 2, for N = 3 and 5
    assert np.isnan(s.per_query[3]).all()
    np.testing.assert_allclose(s.micro, [2 / 3, 2 / 3, 0.6])
    # macro: the mean of class 1 (0.5, 0.5, 0.4) and class 2 (1, 1, 1)
    np.testing.assert_allclose(s.macro, [0.75, 0.75, 0.7])
    assert s.n_undefined == 1
    assert list(s.classes) == [1, 2, 3]
    assert list(s.class_n_queries) == [2, 1, 1]
    assert np.isnan(s.class_means[2]).all()
    assert s.as_dict()["P@3"] == {"micro": pytest.approx(2 / 3), "macro": pytest.approx(0.75)}


def test_macro_weights_classes_equally_micro_weights_queries():
    relevant = np.array([[1], [1], [1], [0]], dtype=bool)
    labels = np.array([7, 7, 7, 9])
    s = metrics.summarise(relevant, np.array([10, 10, 10, 10]), labels, [1])
    assert s.micro[0] == pytest.approx(0.75)
    assert s.macro[0] == pytest.approx(0.5)


def test_short_result_counts_missing_neighbours_as_not_relevant():
    # only 2 neighbours came back (padding False) but the class has 10 index images: P@5 = 2/5
    relevant = np.array([[1, 1, 0, 0, 0]], dtype=bool)
    assert metrics.precision_at_n(relevant, np.array([10]), [5])[0, 0] == pytest.approx(0.4)


def test_cutoff_beyond_ranked_neighbours_is_an_error():
    with pytest.raises(ValueError, match="exceeds"):
        metrics.precision_at_n(np.zeros((2, 3), dtype=bool), np.array([5, 5]), [5])
    with pytest.raises(ValueError):
        metrics.check_ns([0, 1])


def test_recall_is_tie_tolerant_and_counts_misses():
    exact_sims = np.array([[0.9, 0.8, 0.8], [0.9, 0.8, 0.7]])
    # query 0: ANN returned the other image at the tied distance 0.8 -> still a hit
    # query 1: ANN missed the 0.8 image and returned one at 0.6 instead -> 2 of 3
    ann_ids = np.array([[1, 3, 2], [1, 3, 5]])
    ann_sims = np.array([[0.9, 0.8, 0.8], [0.9, 0.7, 0.6]])
    r = metrics.recall_at_n(ann_ids, ann_sims, exact_sims, np.array([3, 3]), [1, 3])
    np.testing.assert_allclose(r, [1.0, (1 + 2 / 3) / 2])
    # a short exact result (2 index images): k = min(N, 2)
    r2 = metrics.recall_at_n(
        np.array([[4, -1, -1]]),
        np.array([[0.5, np.nan, np.nan]]),
        np.array([[0.5, 0.4, np.nan]]),
        np.array([2]),
        [3],
    )
    assert r2[0] == pytest.approx(0.5)


# --------------------------------------------------------------------------- property test
def reference(relevant: np.ndarray, sizes: np.ndarray, labels: np.ndarray, n_cut: int) -> tuple[float, float]:
    """The paper's definition, written independently: a loop per query, then a pandas groupby."""
    precisions, groups = [], []
    for row, size, lab in zip(relevant, sizes, labels, strict=True):
        n = min(n_cut, int(size))
        if n == 0:
            continue
        precisions.append(sum(bool(x) for x in row[:n]) / n)
        groups.append(int(lab))
    if not precisions:
        return float("nan"), float("nan")
    s = pd.Series(precisions, index=groups)
    return float(s.mean()), float(s.groupby(level=0).mean().mean())


@st.composite
def cases(draw):
    q = draw(st.integers(1, 40))
    max_n = draw(st.integers(1, 12))
    n_classes = draw(st.integers(1, 5))
    labels = np.array(draw(st.lists(st.integers(0, n_classes - 1), min_size=q, max_size=q)))
    class_sizes = np.array(draw(st.lists(st.integers(0, 15), min_size=n_classes, max_size=n_classes)))
    relevant = np.array(
        draw(st.lists(st.lists(st.booleans(), min_size=max_n, max_size=max_n), min_size=q, max_size=q))
    )
    ns = draw(st.lists(st.integers(1, max_n), min_size=1, max_size=4))
    return relevant, class_sizes[labels], labels, ns


@settings(max_examples=200, deadline=None)
@given(cases())
def test_property_matches_independent_implementation(case):
    relevant, sizes, labels, ns = case
    s = metrics.summarise(relevant, sizes, labels, ns)
    for j, n_cut in enumerate(s.ns):
        mi, ma = reference(relevant, sizes, labels, n_cut)
        np.testing.assert_allclose(s.micro[j], mi, atol=1e-12, equal_nan=True)
        np.testing.assert_allclose(s.macro[j], ma, atol=1e-12, equal_nan=True)
