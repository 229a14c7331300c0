-- T-SQL the bridge sends to a SQL Server peer: change tracking setup, the
-- snapshot read of changes, the set-based apply and its bookkeeping.
-- Rendered by engine/sqlserver/sql.py (render_tsql): {placeholders} are filled only with
-- bracket-quoted identifiers (qi(): ']' doubled), validated type names, or
-- lists built from them; every value travels as a `?` parameter. Every
-- statement ends with ';' (WITH CHANGE_TRACKING_CONTEXT needs it before).
-- Facts and forms follow /work/shared/reference/sqlserver.md (§ numbers below).

-- name: db_ct_state
-- §1.1: one row when change tracking is on for the current database (no row also when the login lacks VIEW ANY DATABASE).
SELECT is_auto_cleanup_on, retention_period, retention_period_units_desc
  FROM sys.change_tracking_databases WHERE database_id = DB_ID();

-- name: db_snapshot_state
-- §1.1: 'ON' when snapshot isolation is allowed (the CT read needs it, Msg 3952 otherwise).
SELECT snapshot_isolation_state_desc FROM sys.databases WHERE database_id = DB_ID();

-- name: db_name
-- The current database, for ALTER DATABASE (which cannot take a parameter).
SELECT DB_NAME();

-- name: table_ct_state
-- §1.1: one row when change tracking is on for the table; param: bracket-quoted schema.table.
SELECT is_track_columns_updated_on, min_valid_version, begin_version, cleanup_version
  FROM sys.change_tracking_tables WHERE object_id = OBJECT_ID(?);

-- name: table_pk
-- §1.1: one row when the table has a primary key (CT refuses a table without one, Msg 4997).
SELECT 1 FROM sys.key_constraints WHERE parent_object_id = OBJECT_ID(?) AND type = 'PK';

-- name: enable_db_snapshot
-- §1.1: autocommit only (Msg 226 inside a transaction); needs ALTER on the database.
ALTER DATABASE {db} SET ALLOW_SNAPSHOT_ISOLATION ON;

-- name: enable_db_ct
-- §1.1: autocommit only; retention must exceed the longest gap between syncs, downtime included.
ALTER DATABASE {db} SET CHANGE_TRACKING = ON (CHANGE_RETENTION = {retention} {unit}, AUTO_CLEANUP = ON);

-- name: set_db_retention
-- §1.1: a longer retention where change tracking is on already (the option-list form, no "= ON"); autocommit only.
ALTER DATABASE {db} SET CHANGE_TRACKING (CHANGE_RETENTION = {retention} {unit});

-- name: enable_table_ct
-- §1.1: needs ALTER on the table. Column tracking stays OFF: state-based sync never reads the mask.
ALTER TABLE {table} ENABLE CHANGE_TRACKING WITH (TRACK_COLUMNS_UPDATED = OFF);

-- name: disable_table_ct
-- §1.1: every table first, then the database.
ALTER TABLE {table} DISABLE CHANGE_TRACKING;

-- name: disable_db_ct
-- §1.1: autocommit only; fails while any table still has change tracking on.
ALTER DATABASE {db} SET CHANGE_TRACKING = OFF;

-- name: poll_tables
-- Issue 18 item 19: ONE poll per peer for all its source tables (one row per table, objects as VALUES parameters {values}); same columns as poll after the table's position.
SELECT v.n, CHANGE_TRACKING_CURRENT_VERSION() AS cur_v,
       CHANGE_TRACKING_MIN_VALID_VERSION(OBJECT_ID(v.obj)) AS min_v,
       (SELECT o.modify_date FROM sys.objects AS o WHERE o.object_id = OBJECT_ID(v.obj)) AS altered
  FROM (VALUES {values}) AS v(n, obj);

-- name: versions
-- §1.4: inside the snapshot, after db_identity (a table read opens it); NULL min_v = not tracked or no permission. cur_v here is only a check (cursor ahead = restored): the window's upper bound is the poll's.
SELECT CHANGE_TRACKING_CURRENT_VERSION() AS cur_v,
       CHANGE_TRACKING_MIN_VALID_VERSION(OBJECT_ID(?)) AS min_v;

-- name: poll
-- §1.4: the idle poll, read BEFORE the snapshot opens (Dotmim.Sync, Estuary): a race can only re-read. Also the table's min valid version (TRUNCATE raises it without necessarily moving the current version) and the table's sys.objects.modify_date (ALTER TABLE moves it: the bridge then re-reads the catalog).
SELECT CHANGE_TRACKING_CURRENT_VERSION() AS cur_v,
       CHANGE_TRACKING_MIN_VALID_VERSION(OBJECT_ID(?)) AS min_v,
       (SELECT o.modify_date FROM sys.objects AS o WHERE o.object_id = OBJECT_ID(?)) AS altered;

-- name: changes
-- §1.4/§1.5: one page of net changes in (@last, @upto] joined to current values, in key order after the last key of the previous page; LEFT JOIN keeps deletes; own writes filtered by context. Pages bound memory and the snapshot's length (issue 18 item 18).
SET NOCOUNT ON;
DECLARE @last bigint = ?, @ctx varbinary(128) = ?, @upto bigint = ?, @n int = ?{key_vars};
SELECT TOP (@n) ct.SYS_CHANGE_VERSION, ct.SYS_CHANGE_OPERATION,
       CASE WHEN t.{present} IS NULL THEN 0 ELSE 1 END AS sb_present,
       {select_list}
  FROM CHANGETABLE(CHANGES {table}, @last) AS ct
  LEFT OUTER JOIN {table} AS t ON {join}
 WHERE (ct.SYS_CHANGE_CONTEXT IS NULL OR ct.SYS_CHANGE_CONTEXT <> @ctx)
   AND ct.SYS_CHANGE_VERSION <= @upto{after}
 ORDER BY {order};

-- name: keys_first_page
-- Resync: the first page of keys (or rows) in key order; keyset pagination, never OFFSET.
SET NOCOUNT ON;
DECLARE @n int = ?;
SELECT TOP (@n) {select_list}
  FROM {table} AS t
 ORDER BY {order};

-- name: keys_next_page
-- Resync: the page after the last key seen; the predicate is a row comparison spelled out (T-SQL has no tuple >).
SET NOCOUNT ON;
DECLARE @n int = ?, {key_vars};
SELECT TOP (@n) {select_list}
  FROM {table} AS t
 WHERE {after}
 ORDER BY {order};

-- name: rows_for_keys
-- Current rows for a JSON array of keys (conflict checks, repair); absent keys simply return no row.
SET NOCOUNT ON;
DECLARE @keys nvarchar(max) = ?;
SELECT {select_list}
  FROM {table} AS t
  JOIN OPENJSON(@keys) WITH ({json_keys}) AS k ON {key_join};

-- name: apply_prologue
-- §2.1: parameters of the apply batch; XACT_ABORT makes any run-time error roll back all of it.
SET NOCOUNT ON; SET XACT_ABORT ON;
DECLARE @ctx varbinary(128) = ?, @rows nvarchar(max) = ?, @dels nvarchar(max) = ?,
        @batch uniqueidentifier = ?, @link nvarchar(128) = ?, @source_side nchar(1) = ?,
        @signals int = ?, @version bigint = ?, @db_identity nvarchar(64) = ?,
        @states nvarchar(max) = ?, @resend nvarchar(max) = ?;
DECLARE @u int = 0, @i int = 0, @d int = 0;

-- name: apply_stage
-- §2.1: the rows to upsert, typed and deduplicated by the primary key (a duplicate key fails the batch).
DECLARE @src TABLE ({src_columns}, PRIMARY KEY ({src_keys}));
INSERT @src ({src_names})
SELECT {stage_select}
  FROM OPENJSON(@rows) WITH ({json_columns});

-- name: apply_update
-- §2.1: existing rows take the new values; UPDLOCK, SERIALIZABLE hold the keys until commit. Rows already equal are left alone (NULL-safe EXISTS ... EXCEPT), so no CT row is written for them that other links would then read.
WITH CHANGE_TRACKING_CONTEXT (@ctx)
UPDATE t SET {set_list}
  FROM {table} AS t WITH (UPDLOCK, SERIALIZABLE) JOIN @src AS s ON {join}
 WHERE EXISTS (SELECT {src_values} EXCEPT SELECT {dst_values});
SET @u = @@ROWCOUNT;

-- name: apply_insert
-- §2.1: missing rows are inserted; the range lock closes the race with a concurrent writer (Msg 2627).
WITH CHANGE_TRACKING_CONTEXT (@ctx)
INSERT {table} ({target_cols})
SELECT {source_cols} FROM @src AS s
 WHERE NOT EXISTS (SELECT 1 FROM {table} AS t WITH (UPDLOCK, SERIALIZABLE) WHERE {join});
SET @i = @@ROWCOUNT;

-- name: identity_on
-- §3: explicit values for an IDENTITY key; one table per session, turned OFF in the same batch.
SET IDENTITY_INSERT {table} ON;

-- name: identity_off
-- §3: always paired with identity_on.
SET IDENTITY_INSERT {table} OFF;

-- name: apply_delete
-- §2.1: keys whose source row is gone; unknown keys delete nothing.
WITH CHANGE_TRACKING_CONTEXT (@ctx)
DELETE t FROM {table} AS t
  JOIN OPENJSON(@dels) WITH ({json_keys}) AS k ON {key_join};
SET @d = @@ROWCOUNT;

-- name: apply_cursor
-- The CT cursor of a SQL Server source stored in this sink, in the same transaction as the rows.
UPDATE [sync].[ct_cursor] WITH (UPDLOCK, SERIALIZABLE)
   SET version = @version, db_identity = @db_identity, updated_at = SYSUTCDATETIME()
 WHERE link = @link AND source_side = @source_side;
INSERT [sync].[ct_cursor] (link, source_side, version, db_identity, updated_at)
SELECT @link, @source_side, @version, @db_identity, SYSUTCDATETIME()
 WHERE NOT EXISTS (SELECT 1 FROM [sync].[ct_cursor] WITH (UPDLOCK, SERIALIZABLE)
                    WHERE link = @link AND source_side = @source_side);

-- name: apply_record
-- The applied-batch record (a replayed batch id fails on the primary key and rolls everything back); pruned by prune_applied.
INSERT [sync].[applied_batches] (batch_id, link, source_side, signals, upserts, deletes)
VALUES (@batch, @link, @source_side, @signals, @u + @i, @d);

-- name: apply_counts
-- §2.3: counts come from a final SELECT (rowcount is -1 under NOCOUNT); must stay the last statement.
SELECT @u AS updated, @i AS inserted, @d AS deleted;

-- name: applied
-- Was this batch applied already (checked before applying, pgq remoteconsumer style)?
SELECT 1 FROM [sync].[applied_batches] WHERE batch_id = ?;

-- name: cursor_read
-- The stored CT cursor of a SQL Server source whose sink is this SQL Server peer.
SELECT version, db_identity FROM [sync].[ct_cursor] WHERE link = ? AND source_side = ?;

-- name: db_identity
-- §1.3: this database's identity (restore: UPDATE [sync].[db_identity] SET id = NEWID();); also opens the CT snapshot.
SELECT TOP (1) CONVERT(nvarchar(36), id) FROM [sync].[db_identity] ORDER BY created_at DESC;

-- name: table_columns
-- Catalog of one table (computed and rowversion columns excluded: they cannot be written). Types by the column's own user_type_id: an alias type is named by its base system type, while a CLR type (hierarchyid, geometry, geography: is_assembly_type = 1) keeps its own name, which the type check then refuses by name; an inner join on system_type_id silently dropped those columns.
SELECT c.name,
       CASE WHEN ty.is_user_defined = 1 AND ty.is_assembly_type = 0
            THEN TYPE_NAME(c.system_type_id) ELSE ty.name END AS type_name,
       c.max_length, c.precision, c.scale, c.is_nullable, c.collation_name, c.is_identity
  FROM sys.columns AS c
  JOIN sys.types AS ty ON ty.user_type_id = c.user_type_id
 WHERE c.object_id = OBJECT_ID(?) AND c.is_computed = 0
   AND TYPE_NAME(c.system_type_id) <> N'timestamp'
 ORDER BY c.column_id;

-- name: table_pk_columns
-- Primary key columns of one table in key order.
SELECT c.name
  FROM sys.indexes AS i
  JOIN sys.index_columns AS ic ON ic.object_id = i.object_id AND ic.index_id = i.index_id
  JOIN sys.columns AS c ON c.object_id = ic.object_id AND c.column_id = ic.column_id
 WHERE i.object_id = OBJECT_ID(?) AND i.is_primary_key = 1
 ORDER BY ic.key_ordinal;

-- name: db_ct_version
-- §1.2: NULL when change tracking is off for the database; seen by any login (sys.change_tracking_databases is not).
SELECT CHANGE_TRACKING_CURRENT_VERSION();

-- name: db_compat
-- OPENJSON needs compatibility level >= 130; an upgraded database can stay at 120 (Msg 208 "Invalid object name 'OPENJSON'").
SELECT compatibility_level FROM sys.databases WHERE database_id = DB_ID();

-- name: db_updateability
-- A change-tracking source must be the writable primary: READ_ONLY on a readable secondary or a read-only database.
SELECT CONVERT(nvarchar(20), DATABASEPROPERTYEX(DB_NAME(), 'Updateability'));

-- name: client_version_read
-- Microsoft "Change Tracking and Data Restore", option 2: the last version this link stored at its sink, recorded on the source server; a restore to an earlier point brings back an older record.
SELECT version FROM [sync].[ct_client] WHERE link = ? AND source_side = ?;

-- name: client_version_write
-- The version about to be stored at the sink, recorded on the source first (writer connection, own transaction): a record ahead of the sink's cursor (crash in between) is harmless, one behind it means the source went back in time.
SET NOCOUNT ON;
DECLARE @link nvarchar(128) = ?, @source_side nchar(1) = ?, @version bigint = ?;
UPDATE [sync].[ct_client] WITH (UPDLOCK, SERIALIZABLE)
   SET version = @version, updated_at = SYSUTCDATETIME()
 WHERE link = @link AND source_side = @source_side;
INSERT [sync].[ct_client] (link, source_side, version, updated_at)
SELECT @link, @source_side, @version, SYSUTCDATETIME()
 WHERE NOT EXISTS (SELECT 1 FROM [sync].[ct_client] WITH (UPDLOCK, SERIALIZABLE)
                    WHERE link = @link AND source_side = @source_side);

-- name: prune_applied
-- Applied-batch records older than @days: only an in-flight batch (minutes) is ever looked up; bounded per call so the delete stays short.
SET NOCOUNT ON;
DECLARE @days int = ?;
DELETE TOP (5000) FROM [sync].[applied_batches]
 WHERE applied_at < DATEADD(day, -@days, SYSUTCDATETIME());

-- name: has_perms
-- The login's effective permission on one object (1/0; NULL = no such object): HAS_PERMS_BY_NAME(securable, class, permission).
SELECT HAS_PERMS_BY_NAME(?, N'OBJECT', ?);

-- name: db_collation
-- The database default collation (doctor: text keys).
SELECT CONVERT(nvarchar(128), DATABASEPROPERTYEX(DB_NAME(), 'Collation'));

-- name: server_facts
-- Doctor: product version, the server's UTC clock (skew against the bridge host), the database user the grants go to.
SELECT CONVERT(nvarchar(128), SERVERPROPERTY('ProductVersion')), SYSUTCDATETIME(), USER_NAME();

-- Two-way links (issue 18 item 15): bases in [sync].[row_state], resends in
-- [sync].[resend] (migrations/sqlserver/0003_two_way_state.sql). A key text is
-- found by its SHA-256 (HASHBYTES of the nvarchar text; no input limit since
-- SQL Server 2016, which OPENJSON needs anyway), computed alike everywhere.

-- name: state_read
-- Two-way sink, first statement of the apply transaction: the sink's current row and base of each key in @keys (objects of n, ka = the a-key text, c0.. = the key); UPDLOCK, HOLDLOCK keep the rows (and absent keys' ranges) until the apply batch commits, so no write slips in between the decision and the apply.
SET NOCOUNT ON;
DECLARE @keys nvarchar(max) = ?, @link nvarchar(128) = ?;
SELECT k.n, CASE WHEN t.{present} IS NULL THEN 0 ELSE 1 END AS sb_present,
       rs.image, CONVERT(int, rs.known) AS known, CASE WHEN rs.link IS NULL THEN 0 ELSE 1 END AS sb_based,
       {select_list}
  FROM OPENJSON(@keys) WITH (n int 'strict $.n', ka nvarchar(max) 'strict $.ka', {json_keys}) AS k
  LEFT OUTER JOIN {table} AS t WITH (UPDLOCK, HOLDLOCK) ON {key_join}
  LEFT OUTER JOIN [sync].[row_state] AS rs
    ON rs.link = @link AND rs.key_hash = CONVERT(binary(32), HASHBYTES('SHA2_256', k.ka))
 ORDER BY k.n;

-- name: apply_state
-- Two-way sink: the base (image last synced, null = absent) of each key this batch settled, in the batch's transaction (@states: [{"key": a-key text, "image": image text or null}], one entry per key).
UPDATE rs SET image = s.image, known = 1, synced_at = SYSUTCDATETIME()
  FROM [sync].[row_state] AS rs WITH (UPDLOCK, SERIALIZABLE)
  JOIN OPENJSON(@states) WITH ([key] nvarchar(max) 'strict $.key', image nvarchar(max) '$.image') AS s
    ON rs.link = @link AND rs.key_hash = CONVERT(binary(32), HASHBYTES('SHA2_256', s.[key]));
INSERT [sync].[row_state] (link, key_hash, [key], image, known, synced_at)
SELECT @link, CONVERT(binary(32), HASHBYTES('SHA2_256', s.[key])), s.[key], s.image, 1, SYSUTCDATETIME()
  FROM OPENJSON(@states) WITH ([key] nvarchar(max) 'strict $.key', image nvarchar(max) '$.image') AS s
 WHERE NOT EXISTS (SELECT 1 FROM [sync].[row_state] AS rs WITH (UPDLOCK, SERIALIZABLE)
                    WHERE rs.link = @link
                      AND rs.key_hash = CONVERT(binary(32), HASHBYTES('SHA2_256', s.[key])));

-- name: apply_resend
-- Two-way sink: keys whose row here must go back to the other side unchecked (the sink won, or a merged row was written), in the batch's transaction (@resend: JSON array of key texts in this side's names); the change-tracking drain of the link reads them.
INSERT [sync].[resend] (link, source_side, key_hash, [key])
SELECT DISTINCT @link, CASE WHEN @source_side = N'a' THEN N'b' ELSE N'a' END,
       CONVERT(binary(32), HASHBYTES('SHA2_256', j.[value])), j.[value]
  FROM OPENJSON(@resend) AS j
 WHERE NOT EXISTS (SELECT 1 FROM [sync].[resend] AS r WITH (UPDLOCK, SERIALIZABLE)
                    WHERE r.link = @link
                      AND r.source_side = CASE WHEN @source_side = N'a' THEN N'b' ELSE N'a' END
                      AND r.key_hash = CONVERT(binary(32), HASHBYTES('SHA2_256', j.[value])));

-- name: state_vars
-- The parameters of a standalone state write (state_write = state_vars + apply_state): the bases of a SQL Server SOURCE, written after its Postgres sink committed the rows.
SET NOCOUNT ON; SET XACT_ABORT ON;
DECLARE @link nvarchar(128) = ?, @states nvarchar(max) = ?;

-- name: state_forget
-- Two-way: every base of a link (its table was truncated).
DELETE FROM [sync].[row_state] WHERE link = ?;

-- name: resend_read
-- Keys of this SQL Server side to send to the other side unchecked, oldest first.
SET NOCOUNT ON;
DECLARE @n int = ?, @link nvarchar(128) = ?, @source_side nchar(1) = ?;
SELECT TOP (@n) [key] FROM [sync].[resend]
 WHERE link = @link AND source_side = @source_side
 ORDER BY queued_at;

-- name: resend_done
-- The resent keys (@keys: JSON array of key texts) were committed at the other side.
SET NOCOUNT ON;
DECLARE @link nvarchar(128) = ?, @source_side nchar(1) = ?, @keys nvarchar(max) = ?;
DELETE r FROM [sync].[resend] AS r
  JOIN OPENJSON(@keys) AS j
    ON r.key_hash = CONVERT(binary(32), HASHBYTES('SHA2_256', j.[value]))
 WHERE r.link = @link AND r.source_side = @source_side;

-- name: resend_request
-- sync.resolve_conflict() chose this side, or the operator asks for a key: queue keys (@keys: JSON array of key texts in this side's names) to be sent to the other side unchecked.
SET NOCOUNT ON;
DECLARE @link nvarchar(128) = ?, @source_side nchar(1) = ?, @keys nvarchar(max) = ?;
INSERT [sync].[resend] (link, source_side, key_hash, [key])
SELECT DISTINCT @link, @source_side, CONVERT(binary(32), HASHBYTES('SHA2_256', j.[value])), j.[value]
  FROM OPENJSON(@keys) AS j
 WHERE NOT EXISTS (SELECT 1 FROM [sync].[resend] AS r WITH (UPDLOCK, SERIALIZABLE)
                    WHERE r.link = @link AND r.source_side = @source_side
                      AND r.key_hash = CONVERT(binary(32), HASHBYTES('SHA2_256', j.[value])));
