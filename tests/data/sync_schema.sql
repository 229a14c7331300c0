-- the sync schema after all migrations, PostgreSQL 18 (schema_snapshot.py)
create table sync.applied_batches (
    batch_id uuid not null,
    link text not null,
    source_side character(1) not null,
    signals integer not null,
    upserts integer not null,
    deletes integer not null,
    dead jsonb not null default '[]'::jsonb,
    synced jsonb not null default '[]'::jsonb,
    conflicts jsonb not null default '[]'::jsonb,
    truncated boolean not null default false,
    applied_at timestamp with time zone not null default clock_timestamp(),
    queue_ids int8multirange
);
alter table sync.applied_batches add constraint applied_batches_pkey PRIMARY KEY (batch_id);
CREATE INDEX applied_batches_link ON sync.applied_batches USING btree (link, applied_at);
CREATE INDEX applied_batches_upper_id ON sync.applied_batches USING btree (link, source_side, upper(queue_ids));
-- grants on sync.applied_batches: default

create table sync.apply_log (
    link text not null,
    source_side character(1) not null,
    rows integer not null,
    applied_at timestamp with time zone not null default clock_timestamp()
);
CREATE INDEX apply_log_at ON sync.apply_log USING btree (link, source_side, applied_at);
-- grants on sync.apply_log: default

create table sync.backfill_runs (
    id uuid not null,
    link text not null,
    side character(1) not null,
    filter text not null default ''::text,
    last_key jsonb,
    signalled bigint not null default 0,
    total bigint,
    status text not null default 'running'::text,
    started_at timestamp with time zone not null default clock_timestamp(),
    updated_at timestamp with time zone not null default clock_timestamp(),
    finished_at timestamp with time zone
);
alter table sync.backfill_runs add constraint backfill_runs_pkey PRIMARY KEY (id);
alter table sync.backfill_runs add constraint backfill_runs_side_check CHECK ((side = ANY (ARRAY['a'::bpchar, 'b'::bpchar])));
alter table sync.backfill_runs add constraint backfill_runs_status_check CHECK ((status = ANY (ARRAY['requested'::text, 'running'::text, 'finished'::text, 'abandoned'::text])));
CREATE INDEX backfill_runs_open ON sync.backfill_runs USING btree (link, side) WHERE (finished_at IS NULL);
-- grants on sync.backfill_runs: default

create table sync.bridges (
    instance text not null,
    host text not null,
    pid integer not null,
    role text not null,
    started_at timestamp with time zone not null default clock_timestamp(),
    heartbeat timestamp with time zone not null default clock_timestamp(),
    heartbeat_interval interval not null default '00:00:02'::interval,
    backend_pid integer,
    link_set text,
    links text[]
);
alter table sync.bridges add constraint bridges_pkey PRIMARY KEY (instance);
-- grants on sync.bridges: default

create table sync.canary (
    link text not null,
    source_side character(1) not null,
    sent_at timestamp with time zone not null,
    applied_at timestamp with time zone not null default clock_timestamp()
);
alter table sync.canary add constraint canary_pkey PRIMARY KEY (link, source_side);
-- grants on sync.canary: default

create table sync.check_diffs (
    run_id bigint not null,
    kind text not null,
    key_a jsonb,
    key_b jsonb,
    columns text[],
    detail jsonb
);
alter table sync.check_diffs add constraint check_diffs_kind_check CHECK ((kind = ANY (ARRAY['missing_on_a'::text, 'missing_on_b'::text, 'different'::text, 'violation'::text])));
alter table sync.check_diffs add constraint check_diffs_run_id_fkey FOREIGN KEY (run_id) REFERENCES sync.check_runs(id) ON DELETE CASCADE;
CREATE INDEX check_diffs_run ON sync.check_diffs USING btree (run_id);
-- grants on sync.check_diffs: default

create table sync.check_runs (
    id bigint not null generated always as identity,
    kind text not null,
    name text not null,
    verdict text,
    rows_a bigint,
    rows_b bigint,
    missing_a bigint not null default 0,
    missing_b bigint not null default 0,
    different bigint not null default 0,
    violations bigint not null default 0,
    in_flight bigint not null default 0,
    error text,
    seconds double precision,
    started_at timestamp with time zone not null default clock_timestamp(),
    finished_at timestamp with time zone,
    repaired_at timestamp with time zone
);
alter table sync.check_runs add constraint check_runs_kind_check CHECK ((kind = ANY (ARRAY['link'::text, 'rule'::text])));
alter table sync.check_runs add constraint check_runs_pkey PRIMARY KEY (id);
alter table sync.check_runs add constraint check_runs_verdict_check CHECK ((verdict = ANY (ARRAY['equal'::text, 'different'::text, 'in flight'::text, 'ok'::text, 'violated'::text, 'error'::text])));
CREATE INDEX check_runs_name ON sync.check_runs USING btree (kind, name, id DESC);
-- grants on sync.check_runs: default

create view sync.check_status as
 SELECT DISTINCT ON (kind, name) kind,
    name,
    verdict,
    missing_a,
    missing_b,
    different,
    violations,
    in_flight,
    error,
    finished_at AS checked_at,
    repaired_at,
    id AS run_id
   FROM sync.check_runs r
  WHERE finished_at IS NOT NULL
  ORDER BY kind, name, id DESC;
-- grants on sync.check_status: default

create table sync.conflicts (
    id bigint not null generated always as identity,
    link text not null,
    key jsonb not null,
    a_image jsonb,
    b_image jsonb,
    last_image jsonb,
    policy text not null,
    winner text,
    status text not null,
    detected_at timestamp with time zone not null default clock_timestamp(),
    resolved_at timestamp with time zone,
    resolved_by text,
    batch_id uuid not null,
    columns text[]
);
alter table sync.conflicts add constraint conflicts_pkey PRIMARY KEY (id);
alter table sync.conflicts add constraint conflicts_status_check CHECK ((status = ANY (ARRAY['open'::text, 'resolving'::text, 'resolved'::text])));
alter table sync.conflicts add constraint conflicts_winner_check CHECK ((winner = ANY (ARRAY['a'::text, 'b'::text, 'merge'::text])));
CREATE INDEX conflicts_batch ON sync.conflicts USING btree (batch_id);
CREATE UNIQUE INDEX conflicts_open ON sync.conflicts USING btree (link, key) WHERE (status <> 'resolved'::text);
-- grants on sync.conflicts: default

create table sync.ct_cursor (
    link text not null,
    source_side character(1) not null,
    version bigint not null,
    db_identity text,
    updated_at timestamp with time zone not null default clock_timestamp()
);
alter table sync.ct_cursor add constraint ct_cursor_pkey PRIMARY KEY (link, source_side);
alter table sync.ct_cursor add constraint ct_cursor_source_side_check CHECK ((source_side = ANY (ARRAY['a'::bpchar, 'b'::bpchar])));
-- grants on sync.ct_cursor: default

create table sync.dead_letter (
    id bigint not null generated always as identity,
    link text not null,
    source_side character(1) not null,
    key jsonb not null,
    error text not null,
    first_seen timestamp with time zone not null default clock_timestamp(),
    last_seen timestamp with time zone not null default clock_timestamp(),
    attempts integer not null default 1,
    status text not null default 'open'::text,
    closed_at timestamp with time zone
);
alter table sync.dead_letter add constraint dead_letter_link_source_side_key_key UNIQUE (link, source_side, key);
alter table sync.dead_letter add constraint dead_letter_pkey PRIMARY KEY (id);
alter table sync.dead_letter add constraint dead_letter_status_check CHECK ((status = ANY (ARRAY['open'::text, 'retry'::text, 'closed'::text])));
-- grants on sync.dead_letter: default

create table sync.link_control (
    link text not null,
    paused_reason text,
    paused_at timestamp with time zone,
    paused_by text,
    rate_limit double precision,
    active_hours text,
    active_zone text
);
alter table sync.link_control add constraint link_control_pkey PRIMARY KEY (link);
alter table sync.link_control add constraint link_control_rate_limit_check CHECK ((rate_limit > (0)::double precision));
-- grants on sync.link_control: default

create view sync.link_holds as
 SELECT link,
    COALESCE(paused_reason,
        CASE
            WHEN active_hours IS NOT NULL AND NOT sync.in_active_hours(active_hours, active_zone) THEN 'outside active_hours '::text || active_hours
            ELSE NULL::text
        END) AS held_reason,
    rate_limit
   FROM sync.link_control c;
-- grants on sync.link_holds: default

create table sync.link_state (
    link text not null,
    source_side character(1) not null,
    queued bigint not null default 0,
    oldest_queued_at timestamp with time zone,
    last_applied_at timestamp with time zone,
    applied_total bigint not null default 0,
    retries bigint not null default 0,
    last_error text,
    last_error_at timestamp with time zone,
    sampled_at timestamp with time zone not null default clock_timestamp(),
    source_local boolean not null default false,
    batches_total bigint not null default 0,
    error_kind text,
    failing_since timestamp with time zone,
    canary_sent_at timestamp with time zone,
    canary_seen_sent_at timestamp with time zone,
    canary_applied_at timestamp with time zone,
    stall_after interval not null default '00:00:30'::interval,
    stale_after interval not null default '00:00:10'::interval
);
alter table sync.link_state add constraint link_state_pkey PRIMARY KEY (link, source_side);
-- grants on sync.link_state: default

create table sync.queue (
    id bigint not null generated always as identity,
    link text not null,
    side character(1) not null,
    op character(1) not null default 'K'::bpchar,
    key jsonb,
    origin text,
    enqueued_at timestamp with time zone not null default clock_timestamp(),
    batch_id uuid,
    attempts integer not null default 0,
    retry_at timestamp with time zone,
    source text,
    event_id text,
    topic text,
    payload jsonb
);
CREATE INDEX queue_batch ON sync.queue USING btree (batch_id) WHERE (batch_id IS NOT NULL);
CREATE INDEX queue_claim ON sync.queue USING btree (link, side, id) WHERE (batch_id IS NULL);
CREATE INDEX queue_webhook ON sync.queue USING btree (id) WHERE (op = 'W'::bpchar);
-- grants on sync.queue: default

create table sync.row_state (
    link text not null,
    key jsonb not null,
    image jsonb,
    known boolean not null default true,
    synced_at timestamp with time zone not null default clock_timestamp()
);
alter table sync.row_state add constraint row_state_pkey PRIMARY KEY (link, key);
-- grants on sync.row_state: default

create table sync.seed_chunks (
    run_id uuid not null,
    chunk integer not null,
    rows bigint not null,
    copied_at timestamp with time zone not null default clock_timestamp()
);
alter table sync.seed_chunks add constraint seed_chunks_pkey PRIMARY KEY (run_id, chunk);
alter table sync.seed_chunks add constraint seed_chunks_run_id_fkey FOREIGN KEY (run_id) REFERENCES sync.seed_runs(id) ON DELETE CASCADE;
-- grants on sync.seed_chunks: default

create table sync.seed_runs (
    id uuid not null,
    link text not null,
    source_side character(1) not null,
    bounds jsonb not null,
    signals bigint[] not null,
    sink_signals bigint[] not null default '{}'::bigint[],
    total bigint not null,
    status text not null default 'copying'::text,
    started_at timestamp with time zone not null default clock_timestamp(),
    finished_at timestamp with time zone
);
alter table sync.seed_runs add constraint seed_runs_pkey PRIMARY KEY (id);
alter table sync.seed_runs add constraint seed_runs_source_side_check CHECK ((source_side = ANY (ARRAY['a'::bpchar, 'b'::bpchar])));
alter table sync.seed_runs add constraint seed_runs_status_check CHECK ((status = ANY (ARRAY['copying'::text, 'finished'::text])));
CREATE UNIQUE INDEX seed_runs_open ON sync.seed_runs USING btree (link) WHERE (status = 'copying'::text);
-- grants on sync.seed_runs: default

create view sync.status as
 WITH sides AS (
         SELECT link_state.link,
            link_state.source_side
           FROM sync.link_state
        UNION
         SELECT DISTINCT queue.link,
            queue.side
           FROM sync.queue
          WHERE queue.op <> ALL (ARRAY['W'::bpchar, 'C'::bpchar])
        ), live AS (
         SELECT b.instance,
            b.host,
            b.pid,
            b.role,
            b.started_at,
            b.heartbeat,
            b.heartbeat_interval,
            b.backend_pid,
            b.link_set,
            b.links
           FROM sync.bridges b
          WHERE b.heartbeat > (clock_timestamp() - 2::double precision * b.heartbeat_interval) AND (b.backend_pid IS NULL OR (EXISTS ( SELECT 1
                   FROM pg_stat_activity a
                  WHERE a.pid = b.backend_pid)))
        ), base AS (
         SELECT k.link,
            k.source_side,
            s.queued,
            s.oldest_queued_at,
            s.last_applied_at,
            s.applied_total,
            s.batches_total,
            s.retries,
            s.last_error,
            s.last_error_at,
            s.error_kind,
            s.failing_since,
            s.sampled_at,
            s.canary_sent_at,
            s.canary_seen_sent_at,
            s.canary_applied_at,
            s.stall_after,
            s.stale_after,
            COALESCE(s.source_local, s.link IS NULL) AS local,
            q.queued AS q_queued,
            q.oldest AS q_oldest,
            c.held_reason AS paused_reason,
            c.rate_limit,
            (EXISTS ( SELECT 1
                   FROM live
                  WHERE live.role = 'active'::text AND (live.links IS NULL OR (k.link = ANY (live.links))))) AS bridge_alive,
            ( SELECT string_agg((live.host || ':'::text) || live.pid, ', '::text ORDER BY live.host, live.pid) AS string_agg
                   FROM live
                  WHERE live.role = 'active'::text AND (k.link = ANY (live.links))) AS held_by
           FROM sides k
             LEFT JOIN sync.link_state s ON s.link = k.link AND s.source_side = k.source_side
             LEFT JOIN sync.link_holds c ON c.link = k.link
             LEFT JOIN LATERAL ( SELECT count(*) FILTER (WHERE queue.op <> 'C'::bpchar) AS queued,
                    min(queue.enqueued_at) FILTER (WHERE queue.op <> 'C'::bpchar) AS oldest
                   FROM sync.queue
                  WHERE queue.link = k.link AND queue.side = k.source_side AND queue.op <> 'W'::bpchar) q ON COALESCE(s.source_local, s.link IS NULL)
        ), facts AS (
         SELECT b.link,
            b.source_side,
            b.queued,
            b.oldest_queued_at,
            b.last_applied_at,
            b.applied_total,
            b.batches_total,
            b.retries,
            b.last_error,
            b.last_error_at,
            b.error_kind,
            b.failing_since,
            b.sampled_at,
            b.canary_sent_at,
            b.canary_seen_sent_at,
            b.canary_applied_at,
            b.stall_after,
            b.stale_after,
            b.local,
            b.q_queued,
            b.q_oldest,
            b.paused_reason,
            b.rate_limit,
            b.bridge_alive,
            b.held_by,
                CASE
                    WHEN b.local THEN b.q_queued
                    ELSE COALESCE(b.queued, 0::bigint)
                END AS n_queued,
                CASE
                    WHEN b.local THEN b.q_oldest
                    ELSE b.oldest_queued_at
                END AS n_oldest,
            NOT b.local AND (clock_timestamp() - b.sampled_at) > b.stale_after AS n_stale,
            b.canary_sent_at > COALESCE(b.canary_seen_sent_at, '-infinity'::timestamp with time zone) AS canary_pending,
            COALESCE(b.stall_after, '00:00:30'::interval) AS n_stall_after
           FROM base b
        )
 SELECT link,
        CASE source_side
            WHEN 'a'::bpchar THEN 'a_to_b'::text
            ELSE 'b_to_a'::text
        END AS direction,
        CASE
            WHEN paused_reason IS NOT NULL THEN 'paused: '::text || paused_reason
            WHEN NOT bridge_alive THEN 'no bridge'::text
            WHEN last_error IS NOT NULL AND error_kind = 'sink'::text THEN 'waiting for sink'::text
            WHEN last_error IS NOT NULL AND error_kind = 'source'::text THEN 'waiting for source'::text
            WHEN last_error IS NOT NULL THEN 'failing: '::text || last_error
            WHEN canary_pending AND (clock_timestamp() - canary_sent_at) > n_stall_after OR n_queued > 0 AND (clock_timestamp() - n_oldest) > n_stall_after AND COALESCE(last_applied_at, '-infinity'::timestamp with time zone) < (clock_timestamp() - n_stall_after) THEN 'stalled'::text
            WHEN n_queued > 0 THEN 'flowing'::text
            ELSE 'idle'::text
        END AS state,
    n_queued AS queued,
        CASE
            WHEN n_queued > 0 THEN clock_timestamp() - n_oldest
            ELSE NULL::interval
        END AS lag,
    COALESCE(n_stale, false) AS stale,
    ( SELECT COALESCE(sum(l.rows), 0::bigint) AS "coalesce"
           FROM sync.apply_log l
          WHERE l.link = f.link AND l.source_side = f.source_side AND l.applied_at > (clock_timestamp() - '00:01:00'::interval)) AS applied_last_minute,
    last_applied_at,
    COALESCE(applied_total, 0::bigint) AS applied_total,
    COALESCE(batches_total, 0::bigint) AS batches_total,
    COALESCE(retries, 0::bigint) AS retries,
    ( SELECT count(*) AS count
           FROM sync.dead_letter d
          WHERE d.link = f.link AND d.source_side = f.source_side AND d.status <> 'closed'::text) AS dead_letters,
    last_error,
    last_error_at,
    failing_since,
    canary_applied_at - canary_seen_sent_at AS canary_lag,
    canary_applied_at,
        CASE
            WHEN local THEN NULL::interval
            ELSE clock_timestamp() - sampled_at
        END AS sampled_ago,
    ( SELECT max(b.heartbeat) AS max
           FROM sync.bridges b
          WHERE b.role = 'active'::text) AS bridge_heartbeat,
    ( SELECT count(*) AS count
           FROM sync.conflicts c
          WHERE c.link = f.link AND c.status <> 'resolved'::text) AS open_conflicts,
    ( SELECT count(*) AS count
           FROM sync.conflicts c
          WHERE c.link = f.link) AS conflicts_total,
    ( SELECT
                CASE
                    WHEN r.status = 'finished'::text THEN 'done '::text || r.signalled
                    ELSE (((r.status || ' '::text) || r.signalled) || '/'::text) || COALESCE(r.total::text, '?'::text)
                END AS "case"
           FROM sync.backfill_runs r
          WHERE r.link = f.link AND r.side = f.source_side
          ORDER BY r.started_at DESC
         LIMIT 1) AS backfill,
    ( SELECT (c.verdict || ' '::text) || to_char(c.checked_at, 'YYYY-MM-DD HH24:MI:SS'::text)
           FROM sync.check_status c
          WHERE c.kind = 'link'::text AND c.name = f.link) AS last_check,
    ( SELECT string_agg((((((b.role || ' '::text) || b.host) || ':'::text) || b.pid) || ' '::text) || to_char(b.heartbeat, 'HH24:MI:SS'::text), ', '::text ORDER BY b.role, b.host) AS string_agg
           FROM live b) AS bridges,
    rate_limit,
    held_by
   FROM facts f
  ORDER BY link, source_side;
-- grants on sync.status: default

create table sync.webhook_counters (
    source text not null,
    duplicates bigint not null default 0,
    applied bigint not null default 0,
    stale bigint not null default 0,
    dead bigint not null default 0,
    last_duplicate_at timestamp with time zone,
    last_applied_at timestamp with time zone
);
alter table sync.webhook_counters add constraint webhook_counters_pkey PRIMARY KEY (source);
-- grants on sync.webhook_counters: default

create table sync.webhook_events (
    source text not null,
    event_id text not null,
    topic text,
    link text,
    side character(1),
    received_at timestamp with time zone not null default clock_timestamp(),
    payload jsonb
);
alter table sync.webhook_events add constraint webhook_events_pkey PRIMARY KEY (source, event_id);
CREATE INDEX webhook_events_received ON sync.webhook_events USING btree (received_at);
-- grants on sync.webhook_events: default

create view sync.webhook_status as
 WITH sources AS (
         SELECT webhook_counters.source
           FROM sync.webhook_counters
        UNION
         SELECT DISTINCT queue.source
           FROM sync.queue
          WHERE queue.op = 'W'::bpchar
        )
 SELECT s.source,
    ( SELECT count(*) AS count
           FROM sync.queue q
          WHERE q.op = 'W'::bpchar AND q.source = s.source) AS queued,
    ( SELECT clock_timestamp() - min(q.enqueued_at)
           FROM sync.queue q
          WHERE q.op = 'W'::bpchar AND q.source = s.source) AS lag,
    ( SELECT count(*) AS count
           FROM sync.webhook_events e
          WHERE e.source = s.source AND e.received_at > (clock_timestamp() - '01:00:00'::interval)) AS received_last_hour,
    COALESCE(c.applied, 0::bigint) AS applied,
    COALESCE(c.stale, 0::bigint) AS stale_events,
    COALESCE(c.duplicates, 0::bigint) AS duplicates,
    ( SELECT count(*) AS count
           FROM sync.dead_letter d
          WHERE d.key ? 'event_id'::text AND (d.key ->> 'source'::text) = s.source AND d.status <> 'closed'::text) AS dead_letters,
    c.last_applied_at,
    c.last_duplicate_at
   FROM sources s
     LEFT JOIN sync.webhook_counters c ON c.source = s.source
  ORDER BY s.source;
-- grants on sync.webhook_status: default

CREATE OR REPLACE FUNCTION sync.apply_batch(p_origin text, p_table regclass, p_shape jsonb, p_delete text, p_keys jsonb, p_upsert text, p_rows jsonb, p_batch uuid, p_link text, p_side character, p_signals integer, p_ids text)
 RETURNS TABLE(shape_ok boolean, deleted bigint, upserted bigint)
 LANGUAGE plpgsql
AS $function$
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
$function$;
-- grants on sync.apply_batch(p_origin text, p_table regclass, p_shape jsonb, p_delete text, p_keys jsonb, p_upsert text, p_rows jsonb, p_batch uuid, p_link text, p_side character, p_signals integer, p_ids text): default

CREATE OR REPLACE FUNCTION sync.enqueue_webhook_v1(p_source text, p_event_id text, p_topic text, p_link text, p_side character, p_key jsonb, p_payload jsonb)
 RETURNS boolean
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
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
$function$;
-- grants on sync.enqueue_webhook_v1(p_source text, p_event_id text, p_topic text, p_link text, p_side character, p_key jsonb, p_payload jsonb): {OWNER=X/OWNER}

CREATE OR REPLACE FUNCTION sync.in_active_hours(p_hours text, p_zone text)
 RETURNS boolean
 LANGUAGE sql
 STABLE
AS $function$
    select case when s < e then t >= s and t < e else t >= s or t < e end
      from (select split_part(p_hours, '-', 1)::time as s,
                   split_part(p_hours, '-', 2)::time as e,
                   (clock_timestamp() at time zone coalesce(p_zone, 'UTC'))::time as t) w
$function$;
-- grants on sync.in_active_hours(p_hours text, p_zone text): default

CREATE OR REPLACE FUNCTION sync.pause(p_link text, p_reason text)
 RETURNS void
 LANGUAGE plpgsql
AS $function$
begin
    if coalesce(p_reason, '') = '' then
        raise exception 'sync.pause needs a reason';
    end if;
    insert into sync.link_control as c (link, paused_reason, paused_at, paused_by)
    values (p_link, p_reason, clock_timestamp(), current_user)
    on conflict (link) do update
       set paused_reason = excluded.paused_reason, paused_at = excluded.paused_at,
           paused_by = excluded.paused_by;
    perform pg_notify('syncbridge_control', p_link);
end
$function$;
-- grants on sync.pause(p_link text, p_reason text): default

CREATE OR REPLACE FUNCTION sync.prepared_count(p_stmt text)
 RETURNS text
 LANGUAGE plpgsql
AS $function$
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
$function$;
-- grants on sync.prepared_count(p_stmt text): default

CREATE OR REPLACE FUNCTION sync.prune_webhook_events_v1(p_older_than interval)
 RETURNS bigint
 LANGUAGE sql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
    with gone as (
        delete from sync.webhook_events
         where received_at < clock_timestamp() - p_older_than and payload is null
        returning 1
    )
    select count(*) from gone;
$function$;
-- grants on sync.prune_webhook_events_v1(p_older_than interval): {OWNER=X/OWNER}

CREATE OR REPLACE FUNCTION sync.resolve_conflict(p_id bigint, p_winner text)
 RETURNS void
 LANGUAGE plpgsql
AS $function$
begin
    if p_winner not in ('a', 'b') then
        raise exception 'winner must be ''a'' or ''b'', not %', p_winner;
    end if;
    update sync.conflicts
       set status = 'resolving', winner = p_winner, resolved_by = current_user
     where id = p_id and status = 'open';
    if not found then
        raise exception 'conflict % is not open', p_id;
    end if;
end
$function$;
-- grants on sync.resolve_conflict(p_id bigint, p_winner text): default

CREATE OR REPLACE FUNCTION sync.resume(p_link text)
 RETURNS void
 LANGUAGE plpgsql
AS $function$
begin
    update sync.link_control
       set paused_reason = null, paused_at = null, paused_by = null
     where link = p_link;
    perform pg_notify('syncbridge_control', p_link);
end
$function$;
-- grants on sync.resume(p_link text): default

CREATE OR REPLACE FUNCTION sync.resync(p_link text, p_side character DEFAULT 'a'::bpchar)
 RETURNS uuid
 LANGUAGE sql
AS $function$
    insert into sync.backfill_runs (id, link, side, status)
    values (gen_random_uuid(), p_link, p_side, 'requested')
    returning id
$function$;
-- grants on sync.resync(p_link text, p_side character): default

CREATE OR REPLACE FUNCTION sync.retry_dead(p_link text DEFAULT NULL::text, p_id bigint DEFAULT NULL::bigint)
 RETURNS integer
 LANGUAGE sql
AS $function$
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
$function$;
-- grants on sync.retry_dead(p_link text, p_id bigint): default

CREATE OR REPLACE FUNCTION sync.retry_webhook_v1(p_source text, p_event_id text)
 RETURNS boolean
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
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
$function$;
-- grants on sync.retry_webhook_v1(p_source text, p_event_id text): {OWNER=X/OWNER}

CREATE OR REPLACE FUNCTION sync.set_rate(p_link text, p_rows_per_second double precision)
 RETURNS void
 LANGUAGE plpgsql
AS $function$
begin
    if p_rows_per_second < 0 then
        raise exception 'sync.set_rate: rows per second must be positive, or 0 / null for unlimited';
    end if;
    insert into sync.link_control as c (link, rate_limit)
    values (p_link, nullif(p_rows_per_second, 0))
    on conflict (link) do update set rate_limit = excluded.rate_limit;
    perform pg_notify('syncbridge_control', p_link);
end
$function$;
-- grants on sync.set_rate(p_link text, p_rows_per_second double precision): default

CREATE OR REPLACE FUNCTION sync.table_shape(p_table regclass)
 RETURNS jsonb
 LANGUAGE sql
 STABLE
 SET search_path TO 'pg_catalog'
AS $function$
    select coalesce(jsonb_agg(jsonb_build_array(
               a.attname::text, format_type(a.atttypid, a.atttypmod),
               coalesce(a.attnum = any(i.indkey), false)) order by a.attnum), '[]')
      from pg_attribute a
      left join pg_index i on i.indrelid = a.attrelid and i.indisprimary
     where a.attrelid = p_table and a.attnum > 0 and not a.attisdropped
       and a.attgenerated = ''
$function$;
-- grants on sync.table_shape(p_table regclass): default
