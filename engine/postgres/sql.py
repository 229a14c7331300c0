"""Per-link SQL for Postgres sources and sinks, rendered once per link side.

Rows travel between Postgres peers as one jsonb array per batch whose values
are each column's *text representation* (`col::text`, printed under the pinned
settings of `pg_session`) or JSON null for SQL NULL. The sink reads every
value back through its column's own input function
(`jsonb_populate_record`), so what arrives is exactly what the source holds:
numeric scale, interval fields, -0, JSON `null` (the string "null", never
confused with SQL NULL), trailing spaces, every Unicode form. json and jsonb
columns are cast from the text themselves, because populate would store the
string as a JSON string.

"Changed" means the representation differs: the upsert's guard compares the
columns' texts byte for byte (collate "C"), not with the type's `=`, so
1.5 -> 1.50 and '30 days' -> '1 mon' are applied while a rewrite of the same
bytes is still skipped.
"""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import sql

from syncbridge.engine.catalog import LinkShape

JSON_TYPES = ("json", "jsonb")


def _q(name: str) -> str:
    return sql.Identifier(name).as_string(None)


def _lit(text: str) -> str:
    return sql.Literal(text).as_string(None)


def _table(shape: LinkShape, side: str) -> str:
    s = shape.link.side(side)
    return f"{_q(s.schema)}.{_q(s.table)}"


def key_coldefs(shape: LinkShape, side: str) -> str:
    t = shape.table(side)
    return ", ".join(f"{_q(c)} {t.columns[c].type}" for c in shape.key_cols(side))


def _build(pairs: list[str]) -> str:
    """jsonb_build_object over 'name', value pairs, in chunks: a function takes 100 arguments."""
    parts = [pairs[i: i + 50] for i in range(0, len(pairs), 50)]
    return " || ".join("jsonb_build_object(" + ", ".join(p) + ")" for p in parts)


def typed_obj(names: list[str], alias: str, cols: list[str]) -> str:
    """A jsonb object of typed values (keys, and the SQL Server path, which converts them)."""
    return _build([f"{_lit(n)}, {alias}.{_q(c)}" for n, c in zip(names, cols, strict=True)])


def text_obj(names: list[str], alias: str, cols: list[str]) -> str:
    """A jsonb object of the columns' text representations: exact, and NULL stays JSON null."""
    return _build([f"{_lit(n)}, {alias}.{_q(c)}::text"
                   for n, c in zip(names, cols, strict=True)])


def text_row(alias: str, cols: list[str]) -> str:
    """row(...) of the columns' texts compared byte for byte: the representation guard."""
    return "row(" + ", ".join(f'{alias}.{_q(c)}::text collate "C"' for c in cols) + ")"


@dataclass(frozen=True)
class PgLinkSql:
    read_rows: str  # $1 jsonb keys -> (row|null, key) in sink names, skey in source names, img
    upsert: str  # $1 jsonb array of rows in sink names, values as text
    delete: str  # $1 jsonb array of keys in sink names
    truncate: str
    state_read: str  # $1 jsonb sink keys, $2 link -> (ka, cur, last image, known), two-way only


def render(shape: LinkShape, source: str, sink: str) -> PgLinkSql:
    src_keys, dst_keys = shape.key_cols(source), shape.key_cols(sink)
    src_cols, dst_cols = shape.cols(source), shape.cols(sink)
    join = " and ".join(f"t.{_q(s)} = k.{_q(s)}" for s in src_keys)
    two_way = shape.link.direction == "both"
    img = (f"case when t.{_q(src_keys[0])} is null then null "
           f"else {text_obj(shape.cols('a'), 't', src_cols)} end" if two_way else "null::jsonb")
    found = f"t.{_q(src_keys[0])} is null"
    # a found row's key as the row holds it (a citext key's case, numeric scale), not as
    # the signal spelled it: two signals of one row then name one sink row
    read_rows = (
        f"select case when {found} then null "
        f"else {text_obj(dst_cols, 't', src_cols)} end as row, "
        f"case when {found} then {typed_obj(dst_keys, 'k', src_keys)} "
        f"else {typed_obj(dst_keys, 't', src_keys)} end as key, "
        f"case when {found} then {typed_obj(shape.key_cols('a'), 'k', src_keys)} "
        f"else {typed_obj(shape.key_cols('a'), 't', src_keys)} end as ka, "
        f"{typed_obj(src_keys, 'k', src_keys)} as skey, {img} as img "
        f"from jsonb_to_recordset($1::jsonb) as k({key_coldefs(shape, source)}) "
        f"left join {_table(shape, source)} t on {join}"
    )
    sink_table = _table(shape, sink)
    return PgLinkSql(read_rows, _upsert(shape, sink), _delete(shape, sink),
                     f"delete from {sink_table}", _state_read(shape, sink))


def _upsert(shape: LinkShape, sink: str) -> str:
    """One INSERT ... ON CONFLICT over the batch's rows.

    jsonb_to_record with the linked columns' own types reads each text through its
    input function (typmods and domain checks included) and touches no other sink
    column; json-family columns are read as text and cast, so their text is the
    value. Key columns are set too: 1.5 -> 1.50 or a citext case change is the same
    key to `=`, but not the same value."""
    keys, cols = shape.key_cols(sink), shape.cols(sink)
    table = shape.table(sink)
    json_cols = {c for c in cols if table.columns[c].base in JSON_TYPES}
    defs = ", ".join(f"{_q(c)} {'text' if c in json_cols else table.columns[c].type}"
                     for c in cols)
    select = ", ".join(f"r.{_q(c)}::{table.columns[c].type}" if c in json_cols
                       else f"r.{_q(c)}" for c in cols)
    sets = ", ".join(f"{_q(c)} = excluded.{_q(c)}" for c in cols)
    action = (f"do update set {sets} "
              f"where {text_row('t', cols)} is distinct from {text_row('excluded', cols)}")
    return (
        f"insert into {_table(shape, sink)} as t ({', '.join(_q(c) for c in cols)}) "
        f"overriding system value "
        f"select {select} from jsonb_array_elements($1::jsonb) as x(elem), "
        f"jsonb_to_record(x.elem) as r({defs}) "
        f"on conflict ({', '.join(_q(c) for c in keys)}) {action}"
    )


def _delete(shape: LinkShape, sink: str) -> str:
    keys = shape.key_cols(sink)
    join = " and ".join(f"t.{_q(c)} = k.{_q(c)}" for c in keys)
    return (f"delete from {_table(shape, sink)} t using jsonb_to_recordset($1::jsonb) "
            f"as k({key_coldefs(shape, sink)}) where {join}")


def _state_read(shape: LinkShape, sink: str) -> str:
    """The sink's current rows and last-synced images, both named as on side a."""
    keys, a_keys = shape.key_cols(sink), shape.key_cols("a")
    join = " and ".join(f"t.{_q(c)} = k.{_q(c)}" for c in keys)
    ka = typed_obj(a_keys, "k", keys)
    return (
        f"select {ka}::text as ka, case when t.{_q(keys[0])} is null then null "
        f"else {text_obj(shape.cols('a'), 't', shape.cols(sink))} end::text as cur, "
        f"rs.image::text as last, coalesce(rs.known, true) as known "
        f"from jsonb_to_recordset($1::jsonb) as k({key_coldefs(shape, sink)}) "
        f"left join {_table(shape, sink)} t on {join} "
        # the base is kept under the key as the sink row spells it
        f"left join sync.row_state rs on rs.link = $2 and rs.key = "
        f"case when t.{_q(keys[0])} is null then {ka} else {typed_obj(a_keys, 't', keys)} end"
    )
