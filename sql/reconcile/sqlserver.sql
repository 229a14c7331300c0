-- Reconciliation on a SQL Server side (T-SQL, pyodbc ? parameters).
-- Templates are rendered by engine/reconcile/canonical.py: identifiers are
-- [bracketed] by engine/sqlserver's qi, canonical expressions are T-SQL text.

-- name: chunk_checksum
-- Row count and the sum of 64 bits of MD5(canonical row text) over one key range.
SELECT COUNT_BIG(*) AS n, SUM(CAST({hash64} AS decimal(38, 0))) AS h FROM {table}{where}
