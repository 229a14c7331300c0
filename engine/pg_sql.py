"""Per-link SQL for Postgres sources and sinks, rendered once per link side.

Rows travel as one jsonb array per batch: the source builds each row with the
sink's column names, the sink expands it with jsonb_populate_recordset into its
own row type. One round trip and one set-based statement each way, and every
Postgres type keeps its exact value (numeric as numeric, bytea as hex text,
timestamptz with microseconds).
"""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import sql

from .catalog import LinkShape


def _q(name: str) -> str:
    return sql.Identifier(name).as_string(None)


def _table(shape: LinkShape, side: str) -> str:
    s = shape.link.side(side)
    return f"{_q(s.schema)}.{_q(s.table)}"


def _coldefs(shape: LinkShape, side: str) -> str:
    t = shape.table(side)
    return ", ".join(f"{_q(c)} {t.columns[c].type}" for c in shape.key_cols(side))


def _obj(names: list[str], alias: str, cols: list[str]) -> str:
    """jsonb_build_object over the columns, in chunks: a function takes at most 100 arguments."""
    pairs = [
        f"'{n.replace(chr(39), chr(39) * 2)}', {alias}.{_q(c)}"
        for n, c in zip(names, cols, strict=True)
    ]
    parts = [pairs[i: i + 50] for i in range(0, len(pairs), 50)]
    return " || ".join("jsonb_build_object(" + ", ".join(p) + ")" for p in parts)


@dataclass(frozen=True)
class PgLinkSql:
    read_rows: str  # $1 jsonb keys -> (row|null, key) in sink names, skey in source names, img
    upsert: str  # $1 jsonb array of rows in sink names
    delete: str  # $1 jsonb array of keys in sink names
    truncate: str
    state_read: str  # $1 jsonb sink keys, $2 link -> (ka, cur image, last image), two-way only


def render(shape: LinkShape, source: str, sink: str) -> PgLinkSql:
    src_keys, dst_keys = shape.key_cols(source), shape.key_cols(sink)
    src_cols, dst_cols = shape.cols(source), shape.cols(sink)
    join = " and ".join(f"t.{_q(s)} = k.{_q(s)}" for s in src_keys)
    two_way = shape.link.direction == "both"
    a_cols = shape.cols("a")
    img = (f"case when t.{_q(src_keys[0])} is null then null "
           f"else {_obj(a_cols, 't', src_cols)} end" if two_way else "null::jsonb")
    read_rows = (
        f"select case when t.{_q(src_keys[0])} is null then null "
        f"else {_obj(dst_cols, 't', src_cols)} end as row, "
        f"{_obj(dst_keys, 'k', src_keys)} as key, "
        f"{_obj(src_keys, 'k', src_keys)} as skey, {img} as img "
        f"from jsonb_to_recordset($1::jsonb) as k({_coldefs(shape, source)}) "
        f"left join {_table(shape, source)} t on {join}"
    )
    sink_table = _table(shape, sink)
    cols = ", ".join(_q(c) for c in dst_cols)
    nonkey = [c for c in dst_cols if c not in dst_keys]
    if nonkey:
        sets = ", ".join(f"{_q(c)} = excluded.{_q(c)}" for c in nonkey)
        cur = ", ".join(f"t.{_q(c)}" for c in nonkey)
        new = ", ".join(f"excluded.{_q(c)}" for c in nonkey)
        # row(...) keeps a one-column comparison a row comparison too
        action = f"do update set {sets} where row({cur}) is distinct from row({new})"
    else:
        action = "do nothing"
    upsert = (
        f"insert into {sink_table} as t ({cols}) overriding system value "
        f"select {cols} from jsonb_populate_recordset(null::{sink_table}, $1::jsonb) "
        f"on conflict ({', '.join(_q(c) for c in dst_keys)}) {action}"
    )
    del_join = " and ".join(f"t.{_q(c)} = k.{_q(c)}" for c in dst_keys)
    delete = (
        f"delete from {sink_table} t using jsonb_to_recordset($1::jsonb) "
        f"as k({_coldefs(shape, sink)}) where {del_join}"
    )
    return PgLinkSql(read_rows, upsert, delete, f"delete from {sink_table}",
                     _state_read(shape, sink))


def _state_read(shape: LinkShape, sink: str) -> str:
    """The sink's current rows and last-synced images, both named as on side a."""
    keys, a_keys = shape.key_cols(sink), shape.key_cols("a")
    join = " and ".join(f"t.{_q(c)} = k.{_q(c)}" for c in keys)
    ka = _obj(a_keys, "k", keys)
    return (
        f"select {ka}::text as ka, case when t.{_q(keys[0])} is null then null "
        f"else {_obj(shape.cols('a'), 't', shape.cols(sink))} end::text as cur, "
        f"rs.image::text as last "
        f"from jsonb_to_recordset($1::jsonb) as k({_coldefs(shape, sink)}) "
        f"left join {_table(shape, sink)} t on {join} "
        f"left join sync.row_state rs on rs.link = $2 and rs.key = {ka}"
    )
