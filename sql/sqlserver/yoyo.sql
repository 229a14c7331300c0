-- yoyo's own bookkeeping tables on SQL Server (engine/sqlserver/yoyo.py). Written in
-- yoyo's format_sql style: {0.x_quoted} and {quoted.name} are identifiers quoted by the
-- backend's quote_identifier, which is sql.qi (brackets, ']' doubled).
-- DATETIME2 instead of yoyo's TIMESTAMP: TIMESTAMP is rowversion on SQL Server (Msg 273 on insert).

-- name: create_lock_table
-- yoyo's lock table (yoyo/backends/base.py create_lock_table_sql).
CREATE TABLE {0.lock_table_quoted} (
    {quoted.locked} INT DEFAULT 1,
    {quoted.ctime} DATETIME2,
    {quoted.pid} INT NOT NULL,
    PRIMARY KEY ({quoted.locked}))

-- name: create_migration_table
-- yoyo/internalmigrations/v2.py: the applied migrations.
CREATE TABLE {0.migration_table_quoted} (
    {quoted.migration_hash} VARCHAR(64),
    {quoted.migration_id} VARCHAR(255),
    {quoted.applied_at_utc} DATETIME2,
    PRIMARY KEY ({quoted.migration_hash}))

-- name: create_log_table
-- yoyo/internalmigrations/v2.py: the log of applies and rollbacks.
CREATE TABLE {0.log_table_quoted} (
    {quoted.id} VARCHAR(36),
    {quoted.migration_hash} VARCHAR(64),
    {quoted.migration_id} VARCHAR(255),
    {quoted.operation} VARCHAR(10),
    {quoted.username} VARCHAR(255),
    {quoted.hostname} VARCHAR(255),
    {quoted.comment} VARCHAR(255),
    {quoted.created_at_utc} DATETIME2,
    PRIMARY KEY ({quoted.id}))

-- name: create_version_table
-- yoyo/internalmigrations/v2.py: the internal schema version.
CREATE TABLE {0.version_table_quoted} (
    {quoted.version} INT NOT NULL PRIMARY KEY,
    {quoted.installed_at_utc} DATETIME2)
