-- Back to 0014's sync.apply_batch (EXECUTE of the statements) and no prepared_count.
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
        execute p_delete using p_keys;
        get diagnostics n_deleted = row_count;
    end if;
    if p_rows is not null then
        execute p_upsert using p_rows;
        get diagnostics n_upserted = row_count;
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
drop function sync.prepared_count(text);
