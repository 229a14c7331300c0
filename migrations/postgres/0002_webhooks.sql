-- depends: 0001_sync_schema
-- Webhook ingestion: a persistent dedupe record, counters, the enqueue
-- function the webhook app calls, and the sync.webhook_status view.
-- The queue row of an event is deleted once applied, so the dedupe record
-- must outlive it: sync.webhook_events keeps one row per (source, event id)
-- until sync.prune_webhook_events_v1 removes it (providers retry for hours
-- to days, so keep it longer than their retry window).

create table sync.webhook_events (
    source      text not null,
    event_id    text not null,
    topic       text,
    link        text,
    side        char(1),
    received_at timestamptz not null default clock_timestamp(),
    -- set only when the event was dead-lettered, so sync.retry_webhook_v1 can requeue it
    payload     jsonb,
    primary key (source, event_id)
);
create index webhook_events_received on sync.webhook_events (received_at);

-- One row per source; written on duplicates (rare) and once per drained batch,
-- never on the accept path, so concurrent deliveries do not queue on one row.
create table sync.webhook_counters (
    source          text primary key,
    duplicates      bigint not null default 0,
    applied         bigint not null default 0,
    stale           bigint not null default 0,
    dead            bigint not null default 0,
    last_duplicate_at timestamptz,
    last_applied_at timestamptz
);

-- The drain claims op W rows in id order; without this it would walk past
-- every key signal in the queue to find them.
create index queue_webhook on sync.queue (id) where op = 'W';

-- Function: sync.enqueue_webhook_v1
--   Record one verified webhook event and queue it for the bridge, unless the
--   same (source, event id) was seen before.
-- Parameters: source name, provider event id, topic, link and side it is
--   applied to, the mapped key (jsonb), the whole payload (jsonb).
-- Returns: true when queued, false when it was a duplicate (counted).
-- Tables directly manipulated: sync.webhook_events, sync.queue,
--   sync.webhook_counters. Sends pg_notify('syncbridge', 'webhook').
-- SECURITY DEFINER so the webhook app's role needs only EXECUTE on this.
create function sync.enqueue_webhook_v1(
    p_source text, p_event_id text, p_topic text, p_link text, p_side char(1),
    p_key jsonb, p_payload jsonb
) returns boolean
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $body$
begin
    -- a concurrent delivery of the same event waits here for the first to
    -- commit, then sees the conflict: exactly one of them queues the event
    insert into sync.webhook_events (source, event_id, topic, link, side)
    values (p_source, p_event_id, p_topic, p_link, p_side)
    on conflict do nothing;
    if not found then
        insert into sync.webhook_counters as c (source, duplicates, last_duplicate_at)
        values (p_source, 1, clock_timestamp())
        on conflict (source) do update
           set duplicates = c.duplicates + 1, last_duplicate_at = excluded.last_duplicate_at;
        return false;
    end if;
    insert into sync.queue (link, side, op, key, origin, source, event_id, topic, payload)
    values (p_link, p_side, 'W', p_key, 'webhook:' || p_source, p_source, p_event_id,
            p_topic, p_payload);
    perform pg_notify('syncbridge', 'webhook');
    return true;
end
$body$;

-- Function: sync.retry_webhook_v1
--   Requeue a dead-lettered webhook event (after fixing the mapping or the
--   table) and mark its dead letter 'retry'.
-- Returns: true when the event was requeued.
-- Tables directly manipulated: sync.queue, sync.webhook_events, sync.dead_letter.
create function sync.retry_webhook_v1(p_source text, p_event_id text) returns boolean
language plpgsql security definer
set search_path = pg_catalog, pg_temp
as $body$
declare
    e sync.webhook_events;
begin
    select * into e from sync.webhook_events
     where source = p_source and event_id = p_event_id and payload is not null
       for update;
    if not found then
        return false;
    end if;
    insert into sync.queue (link, side, op, origin, source, event_id, topic, payload)
    values (e.link, e.side, 'W', 'webhook:' || e.source, e.source, e.event_id, e.topic, e.payload);
    update sync.webhook_events set payload = null
     where source = p_source and event_id = p_event_id;
    update sync.dead_letter set status = 'retry'
     where link = e.link and source_side = e.side
       and key = jsonb_build_object('source', p_source, 'event_id', p_event_id);
    perform pg_notify('syncbridge', 'webhook');
    return true;
end
$body$;

-- Function: sync.prune_webhook_events_v1
--   Forget dedupe records older than p_older_than (a redelivery after that is
--   treated as new; the version guard still stops it overwriting newer rows).
-- Returns: number of records removed.
create function sync.prune_webhook_events_v1(p_older_than interval) returns bigint
language sql security definer
set search_path = pg_catalog, pg_temp
as $body$
    with gone as (
        delete from sync.webhook_events
         where received_at < clock_timestamp() - p_older_than and payload is null
        returning 1
    )
    select count(*) from gone;
$body$;

-- SECURITY DEFINER functions run as their owner: only roles granted EXECUTE
-- may call them (Postgres grants EXECUTE to PUBLIC by default). The webhook
-- app's role needs: grant usage on schema sync; grant execute on
-- function sync.enqueue_webhook_v1(text, text, text, text, char, jsonb, jsonb).
revoke execute on function sync.enqueue_webhook_v1(text, text, text, text, char, jsonb, jsonb)
    from public;
revoke execute on function sync.retry_webhook_v1(text, text) from public;
revoke execute on function sync.prune_webhook_events_v1(interval) from public;

-- Per source: what is waiting, how old it is, and what became of the rest.
create view sync.webhook_status as
with sources as (
    select source from sync.webhook_counters
    union
    select distinct source from sync.queue where op = 'W'
)
select s.source,
       (select count(*) from sync.queue q where q.op = 'W' and q.source = s.source) as queued,
       (select clock_timestamp() - min(q.enqueued_at) from sync.queue q
         where q.op = 'W' and q.source = s.source) as lag,
       (select count(*) from sync.webhook_events e
         where e.source = s.source and e.received_at > clock_timestamp() - interval '1 hour')
           as received_last_hour,
       coalesce(c.applied, 0) as applied,
       coalesce(c.stale, 0) as stale_events,
       coalesce(c.duplicates, 0) as duplicates,
       (select count(*) from sync.dead_letter d
         where d.key ? 'event_id' and d.key ->> 'source' = s.source and d.status <> 'closed') as dead_letters,
       c.last_applied_at,
       c.last_duplicate_at
  from sources s
  left join sync.webhook_counters c on c.source = s.source
 order by s.source;
