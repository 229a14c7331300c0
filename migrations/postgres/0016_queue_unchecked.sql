-- depends: 0015_apply_batch_prepared
-- The capture trigger's insert into sync.queue is the cost a captured write pays
-- (issue 16), and the queue's two CHECK constraints were a third of it: the executor
-- reads and plans a table's CHECK expressions again at every statement that writes it,
-- so each capturing transaction paid about 12 us of CPU for them (two checks or one
-- combined alike), ~3-7 % of the source's write throughput with fsync on (pgbench,
-- 1 and 4 clients). Every writer of the queue is syncbridge's own: the capture
-- functions (link and side rendered from the validated config), the webhook and
-- requeue functions and the bridge; application roles have no grant on it. Should one
-- appear anyway, a row of another side is never taken (it stays in sync.queue), and
-- one of another op is taken and ignored (held.py Taken.of reads K, R, C and T).
alter table sync.queue drop constraint queue_op_check;
alter table sync.queue drop constraint queue_side_check;
