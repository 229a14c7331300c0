-- Undo 0002_webhooks (queued op W rows are dropped with it: nothing else reads them).
drop view if exists sync.webhook_status;
drop function if exists sync.prune_webhook_events_v1(interval);
drop function if exists sync.retry_webhook_v1(text, text);
drop function if exists sync.enqueue_webhook_v1(text, text, text, text, char, jsonb, jsonb);
drop index if exists sync.queue_webhook;
delete from sync.queue where op = 'W';
drop table if exists sync.webhook_counters;
drop table if exists sync.webhook_events;
