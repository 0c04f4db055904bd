"""build_index is a pure plan (plan_index) plus its execution; the plan alone, without a database."""

from __future__ import annotations

import pytest

from cbir_pg.errors import ConfigError
from cbir_pg.index import _ServerFacts, _Space, plan_index

SERVER = _ServerFacts(maintenance_work_mem_mb=64, memory_cap_mb=4096, max_worker_processes=8, cpu_count=4)


def _space(dim: int, column_type: str = "vector", opclass: str = "vector_cosine_ops", **kw) -> _Space:
    return _Space("embedding_m", dim, column_type, opclass, kw.get("ann"), kw.get("binary"))


def _plan(space: _Space, rows: int = 10_000, **kw):
    args = dict(
        m=16,
        ef_construction=64,
        quantize=None,
        concurrently=False,
        maintenance_work_mem_mb=None,
        parallel_workers=None,
    )
    args.update(kw)
    return plan_index("m", space, rows, SERVER, **args)


def test_plan_uses_the_sql_opclass_and_sizes_memory() -> None:
    p = _plan(_space(512))
    assert (p.kind, p.index_name, p.opclass, p.drop_other) == (
        "hnsw",
        "embedding_m_hnsw_idx",
        "vector_cosine_ops",
        None,
    )
    assert p.parallel_workers == 3  # cpu_count - 1, below max_worker_processes - 1 and 7
    assert p.maintenance_work_mem_mb >= 64
    big = _plan(_space(512), rows=5_000_000)
    assert big.maintenance_work_mem_mb == SERVER.memory_cap_mb  # capped
    assert _plan(_space(512), maintenance_work_mem_mb=99, parallel_workers=0).maintenance_work_mem_mb == 99


def test_plan_halfvec_expression_and_binary_kind() -> None:
    wide = _plan(_space(3000, "vector", "halfvec_cosine_ops"))
    assert wide.opclass == "halfvec_cosine_ops" and "halfvec" in repr(wide.expr)
    bq = _plan(_space(512, ann="embedding_m_hnsw_idx"), quantize="binary")
    assert (bq.kind, bq.opclass, bq.drop_other) == ("hnsw_bq", "bit_hamming_ops", "embedding_m_hnsw_idx")
    assert "binary_quantize" in repr(bq.expr)
    with pytest.raises(ConfigError, match="at most 4,000"):
        _plan(_space(4096, "halfvec", "halfvec_cosine_ops"))
