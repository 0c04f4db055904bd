-- Shared rules, the SQL side of cbir_pg/rules.py (tests/db/test_rules.py checks that they agree).
-- The other schema files call these instead of repeating the literals.

create or replace function cbir.splits() returns text[]
language sql immutable parallel safe as $$ select array['train', 'val', 'test'] $$;
comment on function cbir.splits() is 'the split names (cbir_pg.rules.SPLITS)';

create or replace function cbir.max_vector_index_dim() returns int
language sql immutable parallel safe as $$ select 2000 $$;
comment on function cbir.max_vector_index_dim() is
  'HNSW indexes vector up to this many dims; above it a halfvec column or expression (cbir_pg.rules.MAX_VECTOR_INDEX_DIM)';

create or replace function cbir.max_ef_search() returns int
language sql immutable parallel safe as $$ select 1000 $$;
comment on function cbir.max_ef_search() is 'the largest hnsw.ef_search pgvector accepts (cbir_pg.rules.MAX_EF_SEARCH)';

create or replace function cbir.index_name(p_model text, p_kind text default 'hnsw') returns text
language sql immutable parallel safe as $$ select format('embedding_%s_%s_idx', p_model, p_kind) $$;
comment on function cbir.index_name(text, text) is
  'the name of a model''s HNSW index of a kind (hnsw | hnsw_bq) (cbir_pg.rules.INDEX_NAME)';
