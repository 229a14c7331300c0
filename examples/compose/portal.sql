-- The portal's patients table (Postgres side of the demo link).
create table public.patients (
    id          uuid primary key,
    full_name   text not null,
    email       text,
    balance     numeric(12,2) not null default 0,
    active      boolean not null default true,
    born        date,
    updated_at  timestamptz not null default now(),
    notes       jsonb
);
