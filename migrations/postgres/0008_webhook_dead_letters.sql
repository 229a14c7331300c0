-- depends: 0005_status_view
-- Webhook dead letters (key = {source, event_id}) are retried as webhook
-- events, never as key signals of their link, and a retried one is closed
-- when its event is queued again (a new failure reopens it through the
-- drain's dead_letter upsert), so sync.webhook_status.dead_letters drops back.

-- Function: sync.retry_webhook_v1
--   Requeue a dead-lettered webhook event (after fixing the mapping or the
--   table) and close its dead letter.
-- Returns: true when the event was requeued.
-- Tables directly manipulated: sync.queue, sync.webhook_events, sync.dead_letter.
create or replace function sync.retry_webhook_v1(p_source text, p_event_id text) returns boolean
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
    update sync.dead_letter set status = 'closed', closed_at = clock_timestamp(),
                                last_seen = clock_timestamp()
     where link = e.link and source_side = e.side
       and key = jsonb_build_object('source', p_source, 'event_id', p_event_id);
    perform pg_notify('syncbridge', 'webhook');
    return true;
end
$body$;

-- Function: sync.retry_dead
--   Operator: re-send dead letters (all, one link, or one entry). Key signals
--   are marked 'retry' (the bridge turns them into fresh signals at the
--   source); webhook events are requeued by sync.retry_webhook_v1.
-- Returns: number of entries retried.
-- Tables directly manipulated: sync.dead_letter (and, through
--   retry_webhook_v1, sync.queue and sync.webhook_events).
create or replace function sync.retry_dead(p_link text default null, p_id bigint default null)
returns integer
language sql
as $$
    with picked as (
        select id, key from sync.dead_letter
         where status = 'open'
           and (p_link is null or link = p_link)
           and (p_id is null or id = p_id)
    ), hooks as (
        select sync.retry_webhook_v1(key ->> 'source', key ->> 'event_id') as queued
          from picked where key ? 'event_id' and key ? 'source'
    ), keys as (
        update sync.dead_letter d
           set status = 'retry', last_seen = clock_timestamp()
          from picked p
         where d.id = p.id and not (p.key ? 'event_id' and p.key ? 'source')
        returning 1
    )
    select ((select count(*) from keys) + (select count(*) from hooks where queued))::integer
$$;
