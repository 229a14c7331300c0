-- depends: 0014_one_shot_apply
-- sync.apply_batch ran the link's delete and upsert by EXECUTE, which parses and
-- plans them again at every batch: about 0.2 ms of a one-row batch's 0.45 ms at the
-- sink (issue 16). Each now runs as a prepared statement of the session, prepared
-- at its first use there (sync.prepared_count) and executed with the batch's rows
-- as a literal, so its plan is kept from batch to batch. The statements are the
-- bridge's, as before; a statement changed by an adopted schema change has another
-- name, so it is prepared anew. Same signature and results as 0014.
create function sync.prepared_count(p_stmt text) returns text
language plpgsql
as $$
declare
    v_body text := format(E'(jsonb) as with w as (%s\n returning 1) select count(*) from w',
                          p_stmt);
    v_name text := 'syncbridge_' || left(encode(sha256(convert_to(v_body, 'UTF8')), 'hex'), 40);
    v_prepare text := format('prepare %I', v_name) || v_body;
begin
    -- by name and text: a statement of that name prepared otherwise is not run
    if not exists (select 1 from pg_catalog.pg_prepared_statements
                    where name = v_name and statement = v_prepare) then
        if exists (select 1 from pg_catalog.pg_prepared_statements where name = v_name) then
            execute format('deallocate %I', v_name);
        end if;
        execute v_prepare;
    end if;
    return v_name;
end
$$;
comment on function sync.prepared_count(text) is
    'The name of a session prepared statement counting the rows a statement of one jsonb '
    'parameter writes (prepared here at its first use in the session): sync.apply_batch.';

create or replace function sync.apply_batch(
    p_origin text, p_table regclass, p_shape jsonb,
    p_delete text, p_keys jsonb, p_upsert text, p_rows jsonb,
    p_batch uuid, p_link text, p_side char(1), p_signals int, p_ids text)
returns table (shape_ok boolean, deleted bigint, upserted bigint)
language plpgsql
as $$
declare
    n_deleted bigint := 0;
    n_upserted bigint := 0;
begin
    if sync.table_shape(p_table) is distinct from p_shape then
        return query select false, 0::bigint, 0::bigint;
        return;
    end if;
    perform set_config('syncbridge.origin', p_origin, true);
    if p_keys is not null then
        execute format('execute %I(%L)', sync.prepared_count(p_delete), p_keys) into n_deleted;
    end if;
    if p_rows is not null then
        execute format('execute %I(%L)', sync.prepared_count(p_upsert), p_rows) into n_upserted;
    end if;
    insert into sync.applied_batches
           (batch_id, link, source_side, signals, upserts, deletes, queue_ids)
    select p_batch, p_link, p_side, p_signals, n_upserted, n_deleted, p_ids::int8multirange
     where not exists (select 1 from sync.applied_batches
                        where link = p_link and source_side = p_side
                          and upper(queue_ids) > lower(p_ids::int8multirange)
                          and queue_ids && p_ids::int8multirange);
    if not found then
        raise exception 'batch % names signals an applied batch names', p_batch
              using errcode = 'SB409';
    end if;
    return query select true, n_deleted, n_upserted;
end
$$;
