drop function sync.table_shape(regclass);
alter table sync.conflicts drop constraint conflicts_winner_check;
delete from sync.conflicts where winner = 'merge';
alter table sync.conflicts alter column winner type char(1);
alter table sync.conflicts add constraint conflicts_winner_check check (winner in ('a', 'b'));
alter table sync.conflicts drop column columns;
alter table sync.row_state drop column synced_at, drop column known;
