"""Rocchio and P@N with judgements against independent references: a hand-computed Rocchio vector,
and a plain-loop P@N where judged pairs replace the label rule; plus the moved-cases list and the
judgement value object's checks."""

from __future__ import annotations

import numpy as np
import pytest

from cbir_pg.errors import ConfigError
from cbir_pg.eval.judgements import apply_judgements, judged_precision
from cbir_pg.feedback import Judgement, moves, rocchio_reference


def test_rocchio_by_hand():
    q = np.array([2.0, 0.0])  # unit: (1, 0)
    rel = np.array([[0.0, 3.0], [0.0, 1.0]])  # units (0, 1) twice -> mean (0, 1)
    non = np.array([[-1.0, 0.0]])  # unit (-1, 0)
    out = rocchio_reference(q, rel, non, alpha=1.0, beta=0.5, gamma=0.25)
    assert out.tolist() == pytest.approx([1.0 + 0.25, 0.5])
    assert rocchio_reference(q, np.zeros((0, 2)), np.zeros((0, 2))).tolist() == [1.0, 0.0]


def test_rocchio_moves_the_query_toward_the_relevant():
    rng = np.random.default_rng(0)
    q, r, n = rng.normal(size=8), rng.normal(size=(3, 8)), rng.normal(size=(2, 8))
    out = rocchio_reference(q, r, n)
    unit = lambda a: a / np.linalg.norm(a)  # noqa: E731
    cos = lambda a, b: float(unit(a) @ unit(b))  # noqa: E731
    assert cos(out, r.mean(0)) > cos(q, r.mean(0)) or cos(out, unit(r[0])) > cos(q, unit(r[0]))
    assert cos(out, n[0]) < cos(q, n[0]) or cos(out, n[1]) < cos(q, n[1])


def _loop_precision(query_ids, neighbour_ids, relevant, sizes, judged, n):
    """P@N by plain loops: the judgement where one exists, else the label rule; cut at the class size."""
    out = []
    for i, q in enumerate(query_ids):
        n_eff = min(n, sizes[i])
        if n_eff == 0:
            out.append(np.nan)
            continue
        hits = 0
        for j in range(n_eff):
            nb = int(neighbour_ids[i][j])
            hits += judged[(int(q), nb)] if (int(q), nb) in judged else bool(relevant[i][j])
        out.append(hits / n_eff)
    return np.array(out)


@pytest.mark.parametrize("seed", range(5))
def test_precision_with_judgements_matches_loops(seed):
    rng = np.random.default_rng(seed)
    nq, width = 40, 10
    query_ids = np.arange(1000, 1000 + nq)
    neighbour_ids = rng.integers(1, 300, size=(nq, width))
    relevant = rng.random((nq, width)) < 0.5
    sizes = rng.integers(0, 15, size=nq)
    judged = {}
    for i in rng.choice(nq, size=12, replace=False):
        for j in rng.choice(width, size=3, replace=False):
            judged[(int(query_ids[i]), int(neighbour_ids[i, j]))] = bool(rng.random() < 0.5)
    judged[(5, 6)] = True  # a pair no ranking holds changes nothing
    ns = (1, 3, 5, 10)
    jp = judged_precision(query_ids, neighbour_ids, relevant, sizes, judged, ns)
    for k, n in enumerate(ns):
        ref = _loop_precision(query_ids, neighbour_ids, relevant, sizes, judged, n)
        label_ref = _loop_precision(query_ids, neighbour_ids, relevant, sizes, {}, n)
        assert jp.micro[k] == pytest.approx(np.nanmean(ref))
        assert jp.label_micro[k] == pytest.approx(np.nanmean(label_ref))
    rel, mask = apply_judgements(query_ids, neighbour_ids, relevant, judged)
    has = mask.any(1)
    assert jp.n_judged_queries == int(has.sum()) == len({q for q, _ in judged if q >= 1000})
    assert jp.n_judged_pairs == int(mask.sum())
    ref10 = _loop_precision(query_ids, neighbour_ids, relevant, sizes, judged, 10)
    assert jp.judged_micro[-1] == pytest.approx(np.nanmean(ref10[has]))
    assert jp.n_disagreements == int((rel != relevant).sum())


def test_no_judgements_is_the_label_benchmark():
    relevant = np.array([[True, False], [False, False]])
    jp = judged_precision(
        np.array([1, 2]), np.array([[3, 4], [5, 6]]), relevant, np.array([2, 2]), {}, (1, 2)
    )
    assert jp.micro.tolist() == [0.5, 0.25] and jp.n_judged_queries == 0 and np.isnan(jp.judged_micro).all()


def test_moves():
    m = moves([10, 20, 30, 40], [20, 50, 10, 40])
    assert [(x.image_id, x.before, x.after, x.change) for x in m] == [
        (20, 2, 1, "up"),
        (50, None, 2, "new"),
        (10, 1, 3, "down"),
        (40, 4, 4, "same"),
        (30, 3, None, "dropped"),
    ]


def test_judgement_checks():
    Judgement(neighbour_id=2, model="tiny_cnn", verdict="relevant", query_image_id=1)
    Judgement(neighbour_id=2, model="tiny_cnn", verdict="not_relevant", query_hash="a" * 64)
    for kw, words in [
        ({"query_image_id": 1, "query_hash": "a" * 64}, "exactly one"),
        ({}, "exactly one"),
        ({"query_image_id": 1, "verdict": "maybe"}, "verdict"),
        ({"query_hash": "xyz"}, "64 lowercase hex"),
        ({"query_image_id": 0}, "positive integer"),
        ({"query_image_id": 1, "reason": "x" * 2001}, "longer than"),
        ({"query_image_id": 1, "model": "Bad Name;"}, "model"),
    ]:
        args = {"neighbour_id": 2, "model": "tiny_cnn", "verdict": "relevant", **kw}
        with pytest.raises(ConfigError, match=words):
            Judgement(**args)
