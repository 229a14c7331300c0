-- The clinic's database and patients table (SQL Server side of the demo link).
-- Types follow docs/sqlserver.md: each column holds every value of its Postgres
-- twin exactly, and the other way round. Run by sqlcmd (GO separates batches).
IF DB_ID(N'clinic') IS NULL CREATE DATABASE [clinic];
GO
USE [clinic];
GO
IF OBJECT_ID(N'dbo.patients') IS NULL
CREATE TABLE dbo.patients (
    id          uniqueidentifier NOT NULL CONSTRAINT patients_pk PRIMARY KEY,
    full_name   nvarchar(max) NOT NULL,
    email       nvarchar(max) NULL,
    balance     decimal(12,2) NOT NULL CONSTRAINT patients_balance DEFAULT 0,
    active      bit NOT NULL CONSTRAINT patients_active DEFAULT 1,
    born        date NULL,
    updated_at  datetimeoffset(6) NOT NULL CONSTRAINT patients_updated DEFAULT SYSDATETIMEOFFSET(),
    notes       nvarchar(max) NULL CONSTRAINT patients_notes_json CHECK (ISJSON(notes) = 1)
);
GO
