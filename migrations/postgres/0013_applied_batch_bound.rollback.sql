-- Back to the GiST index of 0011.
create index applied_batches_queue_ids on sync.applied_batches using gist (queue_ids);
drop index sync.applied_batches_upper_id;
