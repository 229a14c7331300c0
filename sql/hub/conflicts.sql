-- Conflicts of two-way links: recorded, then enacted once resolved (engine/hub/resolutions.py).

-- name: record_conflict
-- Hub: the conflicts ($4) found by batch $3; replays of the same batch add nothing.
insert into sync.conflicts as c
       (link, key, a_image, b_image, last_image, policy, winner, status,
        resolved_at, resolved_by, batch_id, columns)
select $1, e -> 'key', nullif(e -> 'a', 'null'), nullif(e -> 'b', 'null'),
       nullif(e -> 'last', 'null'), coalesce(e ->> 'policy', $2), e ->> 'winner',
       case when e ->> 'winner' is null then 'open' else 'resolved' end,
       case when e ->> 'winner' is not null then clock_timestamp() end,
       case when e ->> 'winner' is not null then 'policy:' || coalesce(e ->> 'policy', $2)
       end, $3,
       array(select jsonb_array_elements_text(coalesce(e -> 'columns', '[]')))
  from jsonb_array_elements($4::jsonb) e
 where not exists (select 1 from sync.conflicts x where x.batch_id = $3 and x.key = e -> 'key')
on conflict (link, key) where status <> 'resolved' do update
   set a_image = excluded.a_image, b_image = excluded.b_image,
       batch_id = excluded.batch_id, detected_at = clock_timestamp()

-- name: resolving_conflicts
-- Hub: conflicts an operator settled with sync.resolve_conflict(), to enact.
select id, link, key::text as key, winner, a_image::text as a, b_image::text as b,
       last_image::text as last
  from sync.conflicts where status = 'resolving'

-- name: conflict_resolved
-- Hub: the winner's row has been signalled.
update sync.conflicts set status = 'resolved', resolved_at = clock_timestamp()
 where id = $1 and status = 'resolving'

-- name: resolver_call
-- Hub: a conflict = "function:schema.fn" resolver: fn(link, key, a, b, base) -> row or NULL.
select {fn}($1::text, $2::jsonb, $3::jsonb, $4::jsonb, $5::jsonb)::text
