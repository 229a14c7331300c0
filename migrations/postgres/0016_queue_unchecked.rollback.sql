-- The queue's CHECK constraints as 0001 and 0007 left them.
alter table sync.queue add constraint queue_side_check check (side in ('a', 'b'));
alter table sync.queue add constraint queue_op_check check (op in ('K', 'T', 'R', 'W', 'C'));
