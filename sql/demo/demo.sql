-- SQL of `syncbridge demo` (bridge/demo.py): one small clinic schema on both sides, and the
-- writes the demo makes. Patients P1, P2 are 0b9c1e5e-3f1a-4c2e-9a51-000000000001 and -2.

-- name: schema
-- The same three tables on the portal (a) and the clinic (b).
create table patients (
    id          uuid primary key,
    mrn         text not null unique,
    full_name   text not null,
    birth_date  date,
    balance     numeric(12,2),
    allergies   jsonb,
    photo       bytea,
    active      boolean not null default true,
    updated_at  timestamptz not null default now()
);
create table appointments (
    clinic_code text not null,
    slot_no     integer not null,
    patient_id  uuid not null references patients (id) on delete cascade,
    starts_at   timestamptz not null,
    minutes     smallint not null,
    notes       text,
    primary key (clinic_code, slot_no)
);
create table audit_notes (
    id          bigint primary key,
    body        text not null,
    created_at  timestamp not null default now()
);

-- name: legacy
-- Portal: 25 patients it held before the link existed; capture never saw them, backfill sends them.
insert into patients (id, mrn, full_name, balance)
select ('0b9c1e5e-3f1a-4c2e-9a51-1' || lpad(g::text, 11, '0'))::uuid, 'OLD-' || g,
       'Legacy patient ' || g, g * 1.50
  from generate_series(1, 25) g

-- name: portal_patients
-- Portal: two patients with awkward values (non-ASCII names, leap day, jsonb, bytea, nulls).
insert into patients (id, mrn, full_name, birth_date, balance, allergies, photo) values
    ('0b9c1e5e-3f1a-4c2e-9a51-000000000001', 'MRN-001', 'Zoë Ångström', '1980-02-29', 1234.56,
     '{"penicillin": "severe", "tags": [1, 2.50, null]}', '\x00ff10'),
    ('0b9c1e5e-3f1a-4c2e-9a51-000000000002', 'MRN-002', '李小龍', null, null, null, null)

-- name: portal_appointments
-- Portal: one appointment for each of the two patients.
insert into appointments values
    ('NORTH', 1, '0b9c1e5e-3f1a-4c2e-9a51-000000000001', '2026-12-01 09:00:00.123456+01', 30,
     'first visit ✓'),
    ('NORTH', 2, '0b9c1e5e-3f1a-4c2e-9a51-000000000002', '2026-12-01 10:00+00', 15, null)
