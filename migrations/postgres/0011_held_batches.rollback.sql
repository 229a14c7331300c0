-- Remove the queue ids of 0011 (batches are then marked by batch id again).
alter table sync.queue add primary key (id);
drop index sync.applied_batches_queue_ids;
alter table sync.applied_batches drop column queue_ids;
