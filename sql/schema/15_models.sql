-- Per-model DDL, one place: each encoder's vectors live in their own table cbir.embedding_<model>
-- (created on first ingest, dropped by `cbir-pg models drop`). cbir_pg.db.identifiers only calls these.

-- cbir.embedding_<model>: image_id (primary and foreign key), embedding vector(dim) (halfvec above
-- cbir.max_vector_index_dim()), kept inline (STORAGE PLAIN avoids TOAST: 3-5x faster exact scans),
-- writable by the ingest worker role. Returns the table name; a no-op when it exists.
-- Who reads an embedding table (issue 22; docs/serve.md "Users and datasets"): readers search it as
-- themselves, and row-level security lets them see only the vectors of images they may see (the images
-- of the datasets granted to them, as cbir.image's own policy in 92_access.sql decides), in psql as in
-- the search functions. The ingest worker writes every row; the server's role (before `set local role`)
-- and the façade's analyst role read every row, as they do on cbir.image. The owner bypasses the policies.
-- Called for a new table and, by `cbir-pg db migrate` (92_access.sql), for every existing one.
create or replace function cbir.protect_embedding_table(p_table text) returns void
language plpgsql as $$
declare
  p record;
begin
  if p_table is null or p_table !~ '^embedding_[a-z][a-z0-9_]{0,39}$' then
    raise exception 'invalid embedding table %', to_jsonb(p_table)::text using errcode = 'invalid_parameter_value';
  end if;
  execute format('alter table cbir.%I enable row level security', p_table);
  for p in select policyname from pg_policies where schemaname = 'cbir' and tablename = p_table loop
    execute format('drop policy %I on cbir.%I', p.policyname, p_table);
  end loop;
  -- a scalar subquery, probed per row by the primary key (the rows an HNSW scan visits): an EXISTS would
  -- be planned as a hash of every visible image, built on every search (92_access.sql)
  execute format('create policy reader_granted on cbir.%I for select to cbir_reader'
                 ' using ((select i.id from cbir.image i where i.id = image_id) is not null)', p_table);
  execute format('create policy worker_all on cbir.%I for all to cbir_worker using (true) with check (true)', p_table);
  if to_regrole('cbir_web') is not null then
    execute format('create policy web_all on cbir.%I for select to cbir_web using (true)', p_table);
  end if;
  if to_regrole('cbir_analyst') is not null then
    execute format('create policy analyst_all on cbir.%I for select to cbir_analyst using (true)', p_table);
  end if;
  execute format('grant select on cbir.%I to cbir_reader', p_table);
end
$$;
comment on function cbir.protect_embedding_table(text) is
  'row-level security on an embedding table: readers see the vectors of the images they may see';
revoke all on function cbir.protect_embedding_table(text) from public;

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
  perform cbir.protect_embedding_table(v_table);
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
