-- Per-model DDL, one place: each encoder's vectors live in their own table cbir.embedding_<model>
-- (created on first ingest, dropped by `cbir-pg models drop`). cbir_pg.db.identifiers only calls these.

-- cbir.embedding_<model>: image_id (primary and foreign key), embedding vector(dim) (halfvec above
-- cbir.max_vector_index_dim()), kept inline (STORAGE PLAIN avoids TOAST: 3-5x faster exact scans),
-- writable by the ingest worker role. Returns the table name; a no-op when it exists.
create or replace function cbir.create_embedding_table(p_model text, p_dim int) returns text
language plpgsql as $$
declare
  v_table text := 'embedding_' || p_model;
  v_type text;
begin
  if p_model is null or p_model !~ '^[a-z][a-z0-9_]{0,39}$' then
    raise exception 'invalid model name %', to_jsonb(p_model)::text using errcode = 'invalid_parameter_value';
  end if;
  if p_dim is null or p_dim < 1 or p_dim > 16000 then
    raise exception 'invalid embedding dimension %', p_dim using errcode = 'invalid_parameter_value';
  end if;
  v_type := case when p_dim <= cbir.max_vector_index_dim() then 'vector' else 'halfvec' end;
  execute format(
    'create table if not exists cbir.%I ('
    ' image_id bigint primary key references cbir.image(id) on delete cascade,'
    ' embedding %s(%s) not null,'
    ' created_at timestamptz not null default now())', v_table, v_type, p_dim);
  if v_type = 'vector' then
    execute format('alter table cbir.%I alter column embedding set storage plain', v_table);
  end if;
  execute format('grant select, insert on cbir.%I to cbir_worker', v_table);
  perform cbir.refresh_search_functions(p_model);  -- its search function, once its encoder row exists
  -- readers search it as themselves (row-level security on cbir.image decides what they find)
  execute format('grant select on cbir.%I to cbir_reader', v_table);
  return v_table;
end
$$;
comment on function cbir.create_embedding_table(text, int) is 'create a model''s embedding table (with its worker grant)';

create or replace function cbir.drop_embedding_table(p_model text) returns void
language plpgsql as $$
begin
  if p_model is null or p_model !~ '^[a-z][a-z0-9_]{0,39}$' then
    raise exception 'invalid model name %', to_jsonb(p_model)::text using errcode = 'invalid_parameter_value';
  end if;
  execute format('drop table if exists cbir.%I cascade', 'embedding_' || p_model);
  perform cbir.refresh_search_functions(p_model);  -- drops cbir.knn__<model>
end
$$;
comment on function cbir.drop_embedding_table(text) is 'drop a model''s embedding table and its indexes';

revoke all on function cbir.create_embedding_table(text, int) from public;
revoke all on function cbir.drop_embedding_table(text) from public;
