-- depends: 0001_sync_schema 0002_webhooks
-- Reconciliation: backfill progress, check verdicts and their differing rows,
-- resync requests (sync.status shows backfill progress and last verdicts: 0005).

-- One backfill of one link side ("signal every key"). The row in the SOURCE
-- database is authoritative: it is updated in the same transaction as the
-- chunk's signals, so a restarted backfill resumes exactly after the last
-- committed chunk. When the hub is another database, the CLI mirrors the row
-- there (same id) for sync.status. status 'requested' rows come from
-- sync.resync() and are started by the bridge's background task.
create table sync.backfill_runs (
    id          uuid primary key,
    link        text not null,
    side        char(1) not null check (side in ('a', 'b')),
    filter      text not null default '',     -- the --where condition or the --keys file
    last_key    jsonb,                        -- keyset position (source column names)
    signalled   bigint not null default 0,
    total       bigint,
    status      text not null default 'running'
                check (status in ('requested', 'running', 'finished', 'abandoned')),
    started_at  timestamptz not null default clock_timestamp(),
    updated_at  timestamptz not null default clock_timestamp(),
    finished_at timestamptz
);
create index backfill_runs_open on sync.backfill_runs (link, side) where finished_at is null;

-- Hub: one row per check of a link or run of a rule.
create table sync.check_runs (
    id          bigint generated always as identity primary key,
    kind        text not null check (kind in ('link', 'rule')),
    name        text not null,
    verdict     text check (verdict in ('equal', 'different', 'ok', 'violated', 'error')),
    rows_a      bigint,
    rows_b      bigint,
    missing_a   bigint not null default 0,   -- keys on b only
    missing_b   bigint not null default 0,   -- keys on a only
    different   bigint not null default 0,   -- keys on both sides with other values
    violations  bigint not null default 0,
    in_flight   bigint not null default 0,   -- still changing at the recheck deadline
    error       text,
    seconds     double precision,
    started_at  timestamptz not null default clock_timestamp(),
    finished_at timestamptz,
    repaired_at timestamptz                   -- set by `syncbridge repair`
);
create index check_runs_name on sync.check_runs (kind, name, id desc);

-- Hub: what a check found, one row per key (or per violating row of a rule).
create table sync.check_diffs (
    run_id      bigint not null references sync.check_runs (id) on delete cascade,
    kind        text not null check (kind in ('missing_on_a', 'missing_on_b', 'different',
                                               'violation')),
    key_a       jsonb,           -- the key in side-a column names
    key_b       jsonb,           -- the key in side-b column names
    columns     text[],          -- differing columns, side-a names
    detail      jsonb            -- canonical values per side, or the rule's row
);
create index check_diffs_run on sync.check_diffs (run_id);

-- The last verdict per link and per rule.
create view sync.check_status as
select distinct on (r.kind, r.name)
       r.kind, r.name, r.verdict, r.missing_a, r.missing_b, r.different, r.violations,
       r.in_flight, r.error, r.finished_at as checked_at, r.repaired_at, r.id as run_id
  from sync.check_runs r
 where r.finished_at is not null
 order by r.kind, r.name, r.id desc;

-- Function: sync.resync
--   Ask for a full backfill of a link (every key of its source side, or of
--   p_side). The bridge's background task starts it; `syncbridge backfill`
--   runs it in the foreground instead.
-- Returns: the request id.
-- Tables directly manipulated: sync.backfill_runs.
create function sync.resync(p_link text, p_side char(1) default 'a') returns uuid
language sql
as $$
    insert into sync.backfill_runs (id, link, side, status)
    values (gen_random_uuid(), p_link, p_side, 'requested')
    returning id
$$;

