-- The sync schema: capture queue, sink bookkeeping and the operator surface.
-- Installed on every Postgres peer (a peer is a source with a queue and a sink
-- with an applied-batch record); the hub's copies of link_state, apply_log,
-- dead_letter and bridges are the ones sync.status reads.

create schema if not exists sync;

-- Key signals written by capture triggers (op K = key changed, T = truncate),
-- by conflict resolution (op R = send this side's row, it won) and by the
-- webhook app (op W = event to apply). A row is claimed by setting
-- batch_id, and deleted only after the sink committed that batch.
create table sync.queue (
    id          bigint generated always as identity primary key,
    link        text not null,
    side        char(1) not null check (side in ('a', 'b')),
    op          char(1) not null default 'K' check (op in ('K', 'T', 'R', 'W')),
    key         jsonb,
    origin      text,
    enqueued_at timestamptz not null default clock_timestamp(),
    batch_id    uuid,
    attempts    int not null default 0,
    retry_at    timestamptz,
    source      text,
    event_id    text,
    topic       text,
    payload     jsonb
);
create index queue_claim on sync.queue (link, side, id) where batch_id is null;
create index queue_batch on sync.queue (batch_id) where batch_id is not null;

-- The sink's record of every batch it applied, written in the same
-- transaction as the data: a batch found here after a crash is only cleaned
-- up at the source, never applied again.
create table sync.applied_batches (
    batch_id    uuid primary key,
    link        text not null,
    source_side char(1) not null,
    signals     int not null,
    upserts     int not null,
    deletes     int not null,
    dead        jsonb not null default '[]',
    synced      jsonb not null default '[]',
    conflicts   jsonb not null default '[]',
    truncated   boolean not null default false,
    applied_at  timestamptz not null default clock_timestamp()
);
create index applied_batches_link on sync.applied_batches (link, applied_at);

-- Two-way links: each row's image as last synced, keyed and named as on side
-- a, kept on both peers. A sink row that differs from it changed since the
-- last sync; if the incoming row differs too, that is a conflict.
create table sync.row_state (
    link    text not null,
    key     jsonb not null,
    image   jsonb,
    primary key (link, key)
);

-- Hub: conflicts on two-way links, with both images and the last-synced one.
-- status: open (manual, waiting), resolving (an operator chose), resolved.
create table sync.conflicts (
    id          bigint generated always as identity primary key,
    link        text not null,
    key         jsonb not null,
    a_image     jsonb,
    b_image     jsonb,
    last_image  jsonb,
    policy      text not null,
    winner      char(1) check (winner in ('a', 'b')),
    status      text not null check (status in ('open', 'resolving', 'resolved')),
    detected_at timestamptz not null default clock_timestamp(),
    resolved_at timestamptz,
    resolved_by text,
    batch_id    uuid not null
);
create unique index conflicts_open on sync.conflicts (link, key) where status <> 'resolved';
create index conflicts_batch on sync.conflicts (batch_id);

-- Hub: one row per link and direction, refreshed by the bridge.
create table sync.link_state (
    link            text not null,
    source_side     char(1) not null,
    queued          bigint not null default 0,
    oldest_queued_at timestamptz,
    last_applied_at timestamptz,
    applied_total   bigint not null default 0,
    retries         bigint not null default 0,
    last_error      text,
    last_error_at   timestamptz,
    sampled_at      timestamptz not null default clock_timestamp(),
    primary key (link, source_side)
);

-- Hub: one row per applied batch, pruned after a day; feeds "applied in the last minute".
create table sync.apply_log (
    link        text not null,
    source_side char(1) not null,
    rows        int not null,
    applied_at  timestamptz not null default clock_timestamp()
);
create index apply_log_at on sync.apply_log (link, source_side, applied_at);

-- Hub: rows the sink rejected, kept for an operator to see and retry.
create table sync.dead_letter (
    id            bigint generated always as identity primary key,
    link          text not null,
    source_side   char(1) not null,
    key           jsonb not null,
    error         text not null,
    first_seen    timestamptz not null default clock_timestamp(),
    last_seen     timestamptz not null default clock_timestamp(),
    attempts      int not null default 1,
    status        text not null default 'open' check (status in ('open', 'retry', 'closed')),
    closed_at     timestamptz,
    unique (link, source_side, key)
);

-- Hub: one row per running bridge process (active or standby).
create table sync.bridges (
    instance    text primary key,
    host        text not null,
    pid         int not null,
    role        text not null,
    started_at  timestamptz not null default clock_timestamp(),
    heartbeat   timestamptz not null default clock_timestamp()
);

-- sync.status, the operator's view, is defined once, in 0005_status_view.sql, after
-- every table it reads exists.


-- Operator: re-send dead-lettered keys (all, one link, or one entry). The
-- bridge turns 'retry' entries into fresh signals at the source; an entry
-- whose key then syncs cleanly is closed, one that fails again is reopened.
create function sync.retry_dead(p_link text default null, p_id bigint default null)
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

-- Operator: settle a manual conflict. The bridge then sends the winner's
-- current row to the other side (a forced signal, no second conflict check).
create function sync.resolve_conflict(p_id bigint, p_winner text)
returns void
language plpgsql
as $$
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
$$;
