-- A dead letter's life: written, closed when the key applies, retried on request
-- (engine/hub/dead_letters.py).

-- name: dead_letter
-- Hub: park the rows the sink rejected ($3: the batch's problems), or refresh their entries.
insert into sync.dead_letter as d (link, source_side, key, error)
select $1, $2, e -> 'key', e ->> 'error' from jsonb_array_elements($3::jsonb) e
 where not (e ->> 'defer')::boolean
on conflict (link, source_side, key) do update
   set error = excluded.error, last_seen = clock_timestamp(),
       attempts = d.attempts + 1, status = 'open', closed_at = null

-- name: close_dead_letters
-- Hub: dead letters whose key has since synced cleanly are closed.
update sync.dead_letter set status = 'closed', closed_at = clock_timestamp()
 where link = $1 and source_side = $2 and status <> 'closed' and key = any($3::jsonb[])


-- name: open_dead_letter_links
-- Hub: the link sides with a dead letter not yet closed (their drains close them).
select distinct link, source_side from sync.dead_letter where status <> 'closed'

-- name: retry_requests
-- Hub: dead letters an operator asked to retry with sync.retry_dead().
select id, link, source_side, key::text as key from sync.dead_letter where status = 'retry'

-- name: requeue_key
-- Source: a retried dead letter's key as a fresh signal of its link side.
insert into sync.queue (link, side, key) values ($1, $2, $3::jsonb)

-- name: retry_sent
-- Hub: the retry is queued at the source; the dead letter is open until the key applies.
update sync.dead_letter set status = 'open' where id = $1
