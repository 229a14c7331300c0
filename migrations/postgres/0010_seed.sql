-- depends: 0004_reconcile 0007_status_truth
-- `syncbridge seed` (issue 17): the first copy of a link into an empty sink.
-- Both tables live in the SINK database: a chunk's rows and its row here commit
-- in one transaction, so a killed seed resumes after the chunks that are in.

-- One seed of one link. bounds: the chunk boundaries, each key as texts in
-- source column names (chunk i holds keys in (bounds[i-1], bounds[i]], the last
-- one everything above). signals: the source queue's signal ids of this link side
-- visible in the first copy's snapshot; the copy reflects them, so the handover
-- deletes exactly these. sink_signals (two-way links): the sink side's signals
-- queued before the copy, whose rows the copy replaces.
create table sync.seed_runs (
    id            uuid primary key,
    link          text not null,
    source_side   char(1) not null check (source_side in ('a', 'b')),
    bounds        jsonb not null,
    signals       bigint[] not null,
    sink_signals  bigint[] not null default '{}',
    total         bigint not null,
    status        text not null default 'copying'
                  check (status in ('copying', 'finished')),
    started_at    timestamptz not null default clock_timestamp(),
    finished_at   timestamptz
);
create unique index seed_runs_open on sync.seed_runs (link) where status = 'copying';

-- The chunks of a seed that are in the sink table.
create table sync.seed_chunks (
    run_id    uuid not null references sync.seed_runs (id) on delete cascade,
    chunk     int not null,
    rows      bigint not null,
    copied_at timestamptz not null default clock_timestamp(),
    primary key (run_id, chunk)
);
