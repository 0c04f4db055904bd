"""The shared rules have one home in Python (cbir_pg.rules) and one in SQL (sql/schema/10_rules.sql);
they must agree, and the schema's own checks must use them."""

from __future__ import annotations

import psycopg
import pytest

from cbir_pg import rules
from cbir_pg.db import identifiers
from cbir_pg.errors import ConfigError


def test_sql_and_python_constants_agree(db: str) -> None:
    with psycopg.connect(db) as conn:
        splits, max_dim, max_ef = conn.execute(
            "select cbir.splits(), cbir.max_vector_index_dim(), cbir.max_ef_search()"
        ).fetchone()
        assert tuple(splits) == rules.SPLITS
        assert max_dim == rules.MAX_VECTOR_INDEX_DIM
        assert max_ef == rules.MAX_EF_SEARCH
        for kind in rules.INDEX_KINDS:
            sql_name = conn.execute("select cbir.index_name('toy_model', %s)", (kind,)).fetchone()[0]
            assert sql_name == identifiers.index_name("toy_model", kind)
        # the table's check constraint (alembic) accepts exactly the split names
        constraint = conn.execute(
            "select pg_get_constraintdef(c.oid) from pg_constraint c"
            " where c.conrelid = 'cbir.image'::regclass and pg_get_constraintdef(c.oid) like '%split%'"
        ).fetchone()[0]
        assert sorted(s for s in rules.SPLITS if f"'{s}'" in constraint) == sorted(rules.SPLITS)


@pytest.mark.parametrize("dim", [rules.MAX_VECTOR_INDEX_DIM, rules.MAX_VECTOR_INDEX_DIM + 1])
def test_halfvec_cut_off_agrees(db: str, dim: int) -> None:
    """Python decides the column type at table creation, SQL the operator class at search: same cut-off."""
    key = f"cut_{dim}"
    with psycopg.connect(db) as conn:
        conn.execute(identifiers.create_embedding_table(key, dim))
        conn.execute(
            "insert into cbir.encoder (key, family, dim, vector_type, config, config_hash, table_name)"
            " values (%s, 'test', %s, %s, '{}', 'h', %s)",
            (key, dim, identifiers.vector_type_for(dim), identifiers.embedding_table_name(key)),
        )
        column_type, opclass = conn.execute(
            "select column_type, opclass from cbir.model_vector_space(%s)", (key,)
        ).fetchone()
    halfvec = dim > rules.MAX_VECTOR_INDEX_DIM
    assert column_type == ("halfvec" if halfvec else "vector")
    assert opclass == ("halfvec_cosine_ops" if halfvec else "vector_cosine_ops")


def test_one_ef_search_check() -> None:
    assert rules.check_ef_search(None) is None
    assert rules.check_ef_search(rules.MAX_EF_SEARCH) == rules.MAX_EF_SEARCH
    for bad in (0, rules.MAX_EF_SEARCH + 1):
        with pytest.raises(ConfigError, match="ef_search must be between 1 and 1000"):
            rules.check_ef_search(bad)
