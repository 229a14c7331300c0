-- depends: 0012_link_leases
-- A sink checks every batch it records against the batches it applied before
-- (queue.sql record_batch: no signal applied twice). The GiST index on their
-- queue ids cost about 0.4 ms per small batch to update and search, and a
-- cached generic plan could scan the whole table instead. Queue ids only grow,
-- so a batch can only overlap records whose highest id is above its lowest:
-- a btree on that bound finds the few recent ones, and serves recovery's
-- "ids from N up" (held_records) as well.
create index applied_batches_upper_id
    on sync.applied_batches (link, source_side, upper(queue_ids));
drop index sync.applied_batches_queue_ids;
