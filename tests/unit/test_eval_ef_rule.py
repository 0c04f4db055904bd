"""The evaluation's default ``hnsw.ef_search``: the lookup in the measured (graph vectors -> ef_search)
table and its fallback, and how ``bench --scale`` derives such a table from a curve (no timings)."""

from __future__ import annotations

import pytest

from bench.scale import crossing, ef_table
from cbir_pg import rules
from cbir_pg.eval.topn import _settings
from cbir_pg.rules import default_eval_ef_search


def test_table_is_sorted_and_in_range() -> None:
    sizes = [n for n, _ in rules.EVAL_EF_SEARCH_BY_VECTORS]
    efs = [ef for _, ef in rules.EVAL_EF_SEARCH_BY_VECTORS]
    assert sizes == sorted(set(sizes))
    assert efs == sorted(efs), "a larger graph never gets a smaller ef_search"
    assert all(rules.DEFAULT_EF_SEARCH <= ef <= rules.MAX_EF_SEARCH for ef in efs)


@pytest.fixture
def table(monkeypatch: pytest.MonkeyPatch) -> tuple[tuple[int, int], ...]:
    t = ((12_000, 40), (32_000, 80), (102_000, 160))
    monkeypatch.setattr(rules, "EVAL_EF_SEARCH_BY_VECTORS", t)
    return t


def test_lookup_first_row_that_covers_the_graph(table) -> None:
    assert default_eval_ef_search(1, 500) == 40  # smaller than the smallest measured size
    assert default_eval_ef_search(2, 12_000) == 40
    assert default_eval_ef_search(2, 12_001) == 80
    assert default_eval_ef_search(5, 32_000) == 80
    assert default_eval_ef_search(1, 100_000) == 160
    # never below 16 N: the synthetic curve is too optimistic for top-10 on real embeddings
    assert default_eval_ef_search(10, 500) == 160
    assert default_eval_ef_search(3, 500) == 48


def test_outside_the_table_the_round_1_rule(table) -> None:
    # a larger graph than measured, or N > 10: max(40, 16 N), capped at 1,000
    assert default_eval_ef_search(10, 102_001) == 160
    assert default_eval_ef_search(3, 5_000_000) == 48
    assert default_eval_ef_search(1, 5_000_000) == 40
    assert default_eval_ef_search(20, 1_000) == 320
    assert default_eval_ef_search(100, 1_000) == 1000


def test_empty_table_is_the_round_1_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rules, "EVAL_EF_SEARCH_BY_VECTORS", ())
    for n in (1, 3, 5, 10, 50, 99):
        assert default_eval_ef_search(n, 10_000) == min(1000, max(40, 16 * n))


def test_topn_settings_use_the_rule_and_an_explicit_value_wins(table) -> None:
    settings, ef = _settings("ann", 3, None, 20_000)
    assert ef == 80 and settings["hnsw.ef_search"] == "80"
    assert _settings("ann", 10, 25, 20_000)[1] == 25
    assert _settings("ann", 10, 5, 20_000)[1] == 10  # never below N
    assert _settings("exact", 10, None, 20_000)[1] is None


def _size(size: int, runs: list[tuple[int, float, float]]) -> dict:
    return {
        "size": size,
        "graph_vectors": size + 2000,
        "runs": [{"ef_search": ef, "max_abs_delta_p": d, "speedup_vs_exact": v} for ef, d, v in runs],
    }


def test_ef_table_from_a_curve() -> None:
    per_size = [
        _size(100_000, [(40, 0.004, 2.0), (80, 0.001, 1.5), (160, 0.0, 1.0)]),
        _size(10_000, [(40, 0.0, 0.2), (80, 0.0, 0.1)]),
        _size(30_000, [(40, 0.0015, 0.6), (80, 0.0, 0.4)]),
        # noise: a larger size that qualifies at a smaller ef keeps the previous value
        _size(200_000, [(40, 0.002, 3.0), (80, 0.0, 2.5)]),
        _size(400_000, [(40, 0.01, 3.0), (80, 0.005, 2.5)]),  # none qualifies: the table ends
        _size(800_000, [(40, 0.0, 3.0)]),
    ]
    assert ef_table(per_size) == [[12_000, 40], [32_000, 40], [102_000, 80], [202_000, 80]]


def test_crossing() -> None:
    below = [_size(10_000, [(40, 0.0, 0.2)]), _size(100_000, [(40, 0.0, 0.8)])]
    assert crossing(below)["reached"] is False
    c = crossing([_size(10_000, [(40, 0.0, 0.5)]), _size(40_000, [(40, 0.0, 2.0)])])
    assert c["reached"] and c["first_measured_size"] == 40_000
    assert c["interpolated_size"] == 20_000  # log-log halfway between 0.5x and 2x
