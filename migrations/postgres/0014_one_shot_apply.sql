-- depends: 0013_applied_batch_bound
-- A small one-way batch into a Postgres sink in one statement (issue 16): the
-- bridge's sink transaction was five round trips (BEGIN, origin tag and shape,
-- upsert, record, COMMIT), each about a quarter of a millisecond of a batch's
-- latency. Called outside a transaction, this function is that transaction:
-- it checks the table's shape (returns shape_ok false, having done nothing,
-- when it differs: the bridge then takes its usual path, which says what
-- changed), tags the writes with the link's origin, runs the link's delete and
-- upsert (statements the bridge rendered, with their rows as the one
-- parameter) and records the batch as queue.sql record_batch does. An applied
-- batch naming one of its signals raises SQLSTATE SB409 (the bridge recovers
-- that batch first); a row the sink rejects raises its own error, and the
-- bridge runs the batch again on the path that isolates it. It runs as the
-- caller (no SECURITY DEFINER): it can do only what the caller's role can.
create function sync.apply_batch(
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
