"""Per-link SQL for Postgres sources and sinks, rendered once per link side.

Rows travel between Postgres peers as one jsonb array per batch whose values
are each column's *text representation* (`col::text`, printed under the pinned
settings of `pg_session`) or JSON null for SQL NULL. The sink reads every
value back through its column's own input function
(`jsonb_to_recordset`), so what arrives is exactly what the source holds:
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

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

from psycopg import sql

from syncbridge.engine import sqlfiles
from syncbridge.engine.catalog import LinkShape, base_type, table_identifier

JSON_TYPES = ("json", "jsonb")
APPLY = sqlfiles.Queries("postgres/apply.sql")
READ = sqlfiles.Queries("postgres/read.sql")
QUEUE = sqlfiles.Queries("postgres/queue.sql")
_PAIRS_PER_CALL = 50  # jsonb_build_object takes at most 100 arguments
KEYS_GO_HERE = "\x00"  # no SQL text holds a NUL: marks where copy_rows takes a batch's keys
# key types whose equal values have one text: two keys of a batch never name one row
_ONE_TEXT_KEYS = {"smallint", "integer", "bigint", "uuid"}


def table_name(shape: LinkShape, side: str) -> sql.Identifier:
    """The qualified table of one side of a link."""
    return table_identifier(shape.link.side(side))


def transforms(shape: LinkShape, side: str) -> dict[str, str]:
    """The side's transformed columns (column -> expression): only a source side has them."""
    return shape.link.transform if side in (s for s, _ in shape.link.directions()) else {}


def source_rows(shape: LinkShape, side: str) -> sql.Composable:
    """A side's rows as the link reads them (docs/filters.md): only those its `where`
    matches, each `transform` expression in place of its column; the plain table when the
    side has neither. Every reader of a source side (the drain, check, backfill) goes
    through this, so they all see the same rows. Both are trusted config spliced as SQL,
    and evaluated inside the subquery, so their column names resolve to the table alone."""
    cond, done = shape.link.where.get(side), transforms(shape, side)
    if cond is None and not done:
        return table_name(shape, side)
    cols = sql.SQL(", ").join(
        sql.SQL("({}) as {}").format(sql.SQL(done[c]), sql.Identifier(c)) if c in done
        else sql.Identifier("t", c) for c in shape.cols(side))
    return READ.compose("source_rows", cols=cols, table=table_name(shape, side),
                        where=sql.SQL(cond or "true"))


def key_defs(shape: LinkShape, side: str) -> sql.Composed:
    """`key type, ...` of a side's key columns: the record of jsonb_to_recordset."""
    t = shape.table(side)
    return sql.SQL(", ").join(sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(t.columns[c].type))
                              for c in shape.key_cols(side))


def names(cols: Iterable[str]) -> sql.Composed:
    """`col, ...`: an insert's column list or a conflict target."""
    return sql.SQL(", ").join(map(sql.Identifier, cols))


def columns(alias: str, cols: Iterable[str]) -> sql.Composed:
    """`alias.col, ...`: a select list or a keyset tuple."""
    return sql.SQL(", ").join(sql.Identifier(alias, c) for c in cols)


def key_match(left: str, right: str, cols: Iterable[str]) -> sql.Composed:
    """`left.col = right.col and ...`: a join on the key."""
    return sql.SQL(" and ").join(sql.SQL("{} = {}").format(sql.Identifier(left, c),
                                                            sql.Identifier(right, c))
                                 for c in cols)


def _build(pairs: list[sql.Composable]) -> sql.Composed:
    """jsonb_build_object over 'name', value pairs, in chunks joined with ||."""
    chunks = [pairs[i: i + _PAIRS_PER_CALL] for i in range(0, len(pairs), _PAIRS_PER_CALL)]
    return sql.SQL(" || ").join(sql.SQL("jsonb_build_object({})").format(sql.SQL(", ").join(p))
                                for p in chunks)


def typed_obj(names: list[str], alias: str, cols: list[str]) -> sql.Composed:
    """A jsonb object of typed values (keys, and the SQL Server path, which converts them)."""
    return _build([sql.SQL("{}, {}").format(sql.Literal(n), sql.Identifier(alias, c))
                   for n, c in zip(names, cols, strict=True)])


def text_obj(names: list[str], alias: str, cols: list[str]) -> sql.Composed:
    """A jsonb object of the columns' text representations: exact, and NULL stays JSON null."""
    return _build([sql.SQL("{}, {}::text").format(sql.Literal(n), sql.Identifier(alias, c))
                   for n, c in zip(names, cols, strict=True)])


def text_row(alias: str, cols: list[str]) -> sql.Composed:
    """row(...) of the columns' texts compared byte for byte: the representation guard."""
    texts = sql.SQL(", ").join(sql.SQL('{}::text collate "C"').format(sql.Identifier(alias, c))
                               for c in cols)
    return sql.SQL("row({})").format(texts)


@dataclass(frozen=True)
class StagedSql:
    """The staged path's statements (engine/postgres/staged.py)."""

    read_head: str  # the COPY query up to the batch's keys (a jsonb literal goes between)
    read_tail: str
    stage: tuple[str, str]  # the staging table: pg_temp and its name (one per shape)
    target: tuple[str, str]  # the sink table: schema and name, for a COPY straight into it
    columns: tuple[str, ...]  # its linked columns, in the order of the COPY's fields
    create: str
    upsert: str
    delete: str


@dataclass(frozen=True)
class PgLinkSql:
    read_rows: str  # $1 jsonb keys -> (row|null, key, ka|null = key) in sink and a names, skey, img
    take_rows: str  # queue.sql take whose first row carries read_rows of its keys (rows)
    upsert: str  # $1 jsonb array of rows in sink names, values as text
    delete: str  # $1 jsonb array of keys in sink names
    truncate: str
    state_read: str  # $1 jsonb sink keys, $2 link -> (ka, cur, last image, known), two-way only
    staged: StagedSql  # a large one-way batch as a COPY stream


def render(shape: LinkShape, source: str, sink: str) -> PgLinkSql:
    """The statements of one direction of a link, as text for asyncpg."""
    read_taken = sql.SQL(_read_rows(shape, source, sink, READ.compose("taken_keys"),
                                    join="rows_looked_up"))
    return PgLinkSql(_read_rows(shape, source, sink),
                     take(READ.compose("take_rows", read=read_taken)),
                     _upsert(shape, sink),
                     _delete(shape, sink), APPLY.render("truncate", table=table_name(shape, sink)),
                     _state_read(shape, sink), _staged(shape, source, sink))


def take(rows: sql.Composable = sql.SQL("")) -> str:
    """queue.sql take, with `rows` (take_rows) or without: a small batch's signals and rows
    in one round trip, a large one's signals only (its rows go as COPY, staged.py)."""
    return QUEUE.render("take", rows=rows)


def _read_rows(shape: LinkShape, source: str, sink: str,
               keys: sql.Composable = sql.SQL("$1::jsonb"), join: str = "rows_joined") -> str:
    """The rows are read through source_rows: a row the filter does not match reads as
    absent, so it is deleted at the sink (moved out) and inserted when it matches again.
    A found row's key as the row holds it (a citext key's case, numeric scale), not as
    the signal spelled it: two signals of one row then name one sink row.
    `join` is how the keys meet the table: read.sql rows_joined (the planner's choice)
    or rows_looked_up (a lookup a key, for take_rows' few keys)."""
    src_keys, dst_keys, a_keys = shape.key_cols(source), shape.key_cols(sink), shape.key_cols("a")
    img: sql.Composable = sql.SQL("null::jsonb")
    if shape.link.direction == "both":
        img = READ.compose("row_image", first_key=src_keys[0],
                           image=text_obj(shape.cols("a"), "t", shape.cols(source)))
    def spelled(names: list[str]) -> sql.Composed:
        return READ.compose("found_or_signal", first_key=src_keys[0],
                            signal=typed_obj(names, "k", src_keys),
                            found=typed_obj(names, "t", src_keys))

    # ka (side-a names) is the same object as key when the names are: not built twice
    ka = sql.SQL("null::jsonb") if dst_keys == a_keys else spelled(a_keys)
    return READ.render(
        "read_rows", first_key=src_keys[0],
        row=text_obj(shape.cols(sink), "t", shape.cols(source)), key=spelled(dst_keys), ka=ka,
        skey=typed_obj(src_keys, "k", src_keys), img=img, key_defs=key_defs(shape, source),
        rows_of_keys=READ.compose(join, table=source_rows(shape, source),
                                  join=key_match("t", "k", src_keys)), keys=keys)


def _upsert(shape: LinkShape, sink: str) -> str:
    """One INSERT ... ON CONFLICT over the batch's rows.

    jsonb_to_recordset with the linked columns' own types reads each text through its
    input function (typmods and domain checks included) and touches no other sink
    column; json-family columns are read as text and cast, so their text is the
    value. Key columns are set too: 1.5 -> 1.50 or a citext case change is the same
    key to `=`, but not the same value."""
    cols, types = shape.cols(sink), shape.table(sink).columns
    json_cols = {c for c in cols if types[c].base in JSON_TYPES}
    defs = sql.SQL(", ").join(
        sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL("text" if c in json_cols
                                                          else types[c].type))
        for c in cols)
    values = sql.SQL(", ").join(
        sql.SQL("{}::{}").format(sql.Identifier("r", c), sql.SQL(types[c].type))
        if c in json_cols else sql.Identifier("r", c) for c in cols)
    return APPLY.render("upsert", values=values, defs=defs, **_on_conflict(shape, sink))


def _on_conflict(shape: LinkShape, sink: str) -> dict[str, sql.Composable]:
    """The fields an upsert's insert and guard share, whatever feeds its rows."""
    cols = shape.cols(sink)
    sets = sql.SQL(", ").join(sql.SQL("{} = {}").format(sql.Identifier(c),
                                                         sql.Identifier("excluded", c))
                              for c in cols)
    return {"table": table_name(shape, sink), "cols": names(cols),
            "keys": names(shape.key_cols(sink)), "sets": sets,
            "current": text_row("t", cols), "incoming": text_row("excluded", cols)}


def _staged(shape: LinkShape, source: str, sink: str) -> StagedSql:
    """The staged path: the source's COPY of the batch's rows, the sink's staging table
    (c0 found or not, c1.. the linked columns in order, whatever their names) and the
    upsert and delete from it. A key is spelled as the found row holds it, so two
    signals of one row name one row; where equal keys can be spelled two ways (numeric
    scale, citext, a collation) the upsert takes one row per key."""
    src_keys, cols, types = shape.key_cols(source), shape.cols(sink), shape.table(sink).columns
    sink_keys = shape.key_cols(sink)
    staged = {c: f"c{i}" for i, c in enumerate(cols, 1)}
    texts = sql.SQL(", ").join(
        sql.SQL("({})::text").format(READ.compose(
            "found_or_signal", first_key=src_keys[0], signal=sql.Identifier("k", c),
            found=sql.Identifier("t", c))) if c in src_keys else sql.SQL("{}::text").format(
            sql.Identifier("t", c)) for c in shape.cols(source))
    read = READ.render("copy_rows", first_key=src_keys[0], cols=texts,
                       table=source_rows(shape, source), keys=sql.SQL(KEYS_GO_HERE),
                       key_defs=key_defs(shape, source), join=key_match("t", "k", src_keys))
    head, _, tail = read.partition(KEYS_GO_HERE)
    defs = ", ".join([sql.SQL("c0 boolean").as_string(None)] + [
        sql.SQL("{} {}").format(sql.Identifier(staged[c]), sql.SQL(
            types[c].type if c in sink_keys else types[c].base)).as_string(None) for c in cols])
    # a type outside pg_catalog (format_type qualifies it) would depend on a staging table
    # kept for the session: its DROP or ALTER DOMAIN would fail while the bridge runs.
    # Such a table lives for one transaction instead (about 1.4 ms more per batch).
    end = "drop" if any("." in types[c].type or "." in types[c].base for c in cols) \
        else "delete rows"
    digest = hashlib.sha1(f"{shape.link.name}\n{sink}\n{defs}".encode()).hexdigest()[:16]
    stage = ("pg_temp", f"syncbridge_stage_{digest}")
    keyed = [sql.Identifier("r", staged[c]) for c in sink_keys]
    one_text = all(base_type(shape.table(side).columns[c].base) in _ONE_TEXT_KEYS
                   for side, keys in ((source, src_keys), (sink, sink_keys)) for c in keys)
    distinct = sql.SQL("") if one_text else sql.SQL("distinct on ({})").format(
        sql.SQL(", ").join(keyed))
    join = sql.SQL(" and ").join(sql.SQL("{} = {}").format(
        sql.Identifier("t", c), sql.Identifier("k", staged[c])) for c in sink_keys)
    side = shape.link.side(sink)
    return StagedSql(
        head, tail, stage, (side.schema, side.table), tuple(cols),
        APPLY.render("stage", stage=stage, defs=sql.SQL(defs), end=sql.SQL(end)),
        APPLY.render("upsert_staged", distinct=distinct, values=sql.SQL(", ").join(
            sql.Identifier("r", staged[c]) for c in cols), stage=stage,
            **_on_conflict(shape, sink)),
        APPLY.render("delete_staged", table=table_name(shape, sink), stage=stage, join=join))


def _delete(shape: LinkShape, sink: str) -> str:
    return APPLY.render("delete", table=table_name(shape, sink), key_defs=key_defs(shape, sink),
                        join=key_match("t", "k", shape.key_cols(sink)))


def _state_read(shape: LinkShape, sink: str) -> str:
    """The sink's current rows and last-synced images, both named as on side a."""
    keys, a_keys = shape.key_cols(sink), shape.key_cols("a")
    return READ.render(
        "state_read", first_key=keys[0], ka_signal=typed_obj(a_keys, "k", keys),
        ka_found=typed_obj(a_keys, "t", keys), cur=text_obj(shape.cols("a"), "t", shape.cols(sink)),
        key_defs=key_defs(shape, sink), table=table_name(shape, sink),
        join=key_match("t", "k", keys))
