-- The 0001 / 0002 definitions.
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
    update sync.dead_letter set status = 'retry'
     where link = e.link and source_side = e.side
       and key = jsonb_build_object('source', p_source, 'event_id', p_event_id);
    perform pg_notify('syncbridge', 'webhook');
    return true;
end
$body$;

create or replace function sync.retry_dead(p_link text default null, p_id bigint default null)
returns integer
language sql
as $$
    with r as (
        update sync.dead_letter
           set status = 'retry', last_seen = clock_timestamp()
         where status = 'open'
           and (p_link is null or link = p_link)
           and (p_id is null or id = p_id)
        returning 1
    )
    select count(*)::integer from r
$$;
