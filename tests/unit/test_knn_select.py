"""k selection on constructed neighbour lists where the best k is known."""

from __future__ import annotations

import numpy as np
import pytest

from cbir_pg.eval.classification import KnnScorer, select_k


def _case(best_k: int, n: int = 60, K: int = 15) -> tuple[np.ndarray, np.ndarray]:
    """Queries of class 0/1; each query's neighbour list is built so that majority vote is right
    exactly when k == best_k (odd k's other than best_k are wrong for most queries)."""
    rng = np.random.default_rng(best_k)
    y = rng.integers(0, 2, n)
    neigh = np.empty((n, K), dtype=np.int64)
    for i, c in enumerate(y):
        other = 1 - c
        # the first best_k neighbours: a majority of c only when all best_k are counted
        row = [other] * ((best_k - 1) // 2) + [c] * ((best_k + 1) // 2)
        row += [other] * (K - best_k)
        neigh[i] = row
    return y, neigh


@pytest.mark.parametrize("best_k", [5, 7, 9])
def test_select_k_finds_the_constructed_best_k(best_k):
    y, neigh = _case(best_k)
    sel = select_k(y, neigh, [0, 1], range(1, 16))
    assert sel.best_k == best_k
    assert sel.best_score == pytest.approx(1.0)
    assert sel.scores[best_k - 1] < 1.0 and sel.scores[best_k + 1] < 1.0
    assert set(sel.scores) == set(range(1, 16))


def test_ties_go_to_the_smallest_k_and_range_is_clipped():
    y = np.array([0, 1, 0])
    neigh = np.array([[0, 0, 0], [1, 1, 1], [0, 0, 0]])
    sel = select_k(y, neigh, [0, 1], range(1, 100))
    assert sel.best_k == 1
    assert sorted(sel.scores) == [1, 2, 3]
    sel = select_k(y, neigh, [0, 1], [3, 2])
    assert sel.best_k == 2
    with pytest.raises(ValueError):
        select_k(y, neigh, [0, 1], [10, 11])


def test_vote_ties_go_to_the_nearest_neighbours_class():
    scorer = KnnScorer(np.array([[2, 1, 1, 2], [1, 2, 2, 1]]), [1, 2])
    pred, scores = scorer.at(2)
    assert pred.tolist() == [2, 1]
    assert scores.tolist() == [[0.5, 0.5], [0.5, 0.5]]
    pred, scores = scorer.at(3)
    assert pred.tolist() == [1, 2]
    # going back to a smaller k recomputes from scratch
    pred, _ = scorer.at(1)
    assert pred.tolist() == [2, 1]


def test_weighted_votes_and_missing_neighbours():
    labels = np.array([[1, 2, 2, -1]])
    sims = np.array([[0.9, 0.2, 0.2, 0.0]])
    pred, scores = KnnScorer(labels, [1, 2], sims, weighted=True).at(4)
    assert pred.tolist() == [1]
    assert scores[0] == pytest.approx([0.9 / 1.3, 0.4 / 1.3])
    pred, scores = KnnScorer(labels, [1, 2]).at(4)
    assert pred.tolist() == [2]
    assert scores[0] == pytest.approx([1 / 3, 2 / 3])
