-- depends: 0010_seed
-- Batches between Postgres peers are taken by deleting their signals in a source
-- transaction held open until the sink committed (issue 16): no claim UPDATE, no
-- batch id index entries. The sink's record names the signals it applied by
-- their queue ids, so a batch whose source commit was lost (crash, dropped
-- connection) is recognised and only its follow-ups are replayed.
alter table sync.applied_batches add column queue_ids int8multirange;
create index applied_batches_queue_ids on sync.applied_batches using gist (queue_ids);

-- Capture writes one queue row per changed key: one index fewer on it is a cheaper
-- write for every application statement. Nothing looks a signal up by id alone: the
-- drains use (link, side, id) (queue_claim) or ctid, webhook events their own index.
alter table sync.queue drop constraint queue_pkey;
