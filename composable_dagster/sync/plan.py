"""The sync plan as SQL: which members changed since the last delivery, then their values.

Pure: values in, sqlglot expressions out. Two statements per run, both set arithmetic in
the engine; Python only streams the rows that change:

1. `delta`: current (key hash, row hash) pairs against the snapshot's, one full outer join
   on a 128-bit key hash (warehouse/fingerprints.py); or `delta_of` a set of candidate keys
   (from the membership log) when the engine knows every changed key is among them. When
   the audience's materialization stored the row hash of this mapping
   (`membership_row_hash`), the current side is the membership table alone and no mapped
   value is read; otherwise (traits in the mapping, or a membership stored before the sync
   existed) `current_hashes` joins the parent model.
2. `changes`: values for the delta's keys only: adds and updates from the parent model,
   removes from the snapshot (the values last delivered), with a duplicate-key check.

Columns are positional (`f0`, `f1`, …) so any destination field name is safe; the mapping
fingerprint ties a snapshot to its mapping.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import sqlglot
from sqlglot import exp

from composable_dagster.filters import CatalogSchema, compile_trait_values
from composable_dagster.filters.compile import count_star, model_rows
from composable_dagster.filters.schema import ModelDef
from composable_dagster.spec.sync import BUCKETS, MappedField, SplitRange
from composable_dagster.warehouse.fingerprints import (
    change_kind,
    differs,
    row_hash,
    single_row_hash,
)

PLAN_VERSION = "v2"  # bump when the hash formula changes: every snapshot then resyncs


def mapping_fingerprint(
    fields: Sequence[MappedField], *, dialect: str, engine: str, audience_id: str = ""
) -> str:
    """Identifies what a snapshot's hashes mean; any change makes the next run resend all.

    The audience is part of it: another audience's membership versions and log say nothing
    about this snapshot (who was delivered stays known, so a mirror removes the old
    audience's members)."""
    payload = json.dumps(
        [PLAN_VERSION, dialect, engine, audience_id,
         [(f.destination_field, f.source_column) for f in fields]]
    )  # fmt: skip
    return hashlib.sha256(payload.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class RowHashColumn:
    """A membership column holding the row hash of a mapping's parent columns, in order."""

    name: str
    columns: tuple[str, ...]


def membership_row_hash(fields: Sequence[MappedField], *, dialect: str) -> RowHashColumn | None:
    """The row-hash column an audience's materialization can store for this mapping, so the
    sync's diff reads only the membership table; None when a field is a trait (its value
    is not a parent column). The name depends only on the columns, so syncs mapping the
    same columns share it."""
    columns = tuple(f.column for f in fields if f.column is not None)
    if len(columns) != len(fields):
        return None
    digest = hashlib.sha256(json.dumps([PLAN_VERSION, dialect, columns]).encode()).hexdigest()
    return RowHashColumn(name=f"row_hash_{digest[:16]}", columns=columns)


def current_hashes(
    *,
    members: exp.Table,
    parent: ModelDef,
    fields: Sequence[MappedField],
    schema: CatalogSchema,
    split: SplitRange | None,
    dialect: str,
    now: datetime,
    stored: RowHashColumn | None,
) -> exp.Select:
    """`key_hash, row_hash`: one row per member (of the split group), with the hash of its
    mapped values; NULL where the key has several parent rows (it never equals a delivered
    hash, so the key reaches `changes`, which rejects it).

    With `stored` (a column of the membership table) this reads the membership alone;
    otherwise it joins the parent model and the mapped traits and hashes their values.
    """
    m = "m"
    key = exp.column("entity_key", m)
    if stored is not None:
        select = exp.select(
            exp.column("key_hash", m), exp.alias_(exp.column(stored.name, m), "row_hash")
        ).from_(members.copy().as_(m))
    else:
        joined, values = _with_values(
            exp.select().from_(members.copy().as_(m)), key=key, parent=parent, fields=fields,
            schema=schema, dialect=dialect, now=now,
        )  # fmt: skip
        select = joined.select(
            exp.column("key_hash", m),
            exp.alias_(single_row_hash(row_hash(values, dialect)), "row_hash"),
        ).group_by(exp.column("key_hash", m))
    return _in_split(select, key=key, split=split, dialect=dialect)


def delta(*, current: exp.Select, snapshot: exp.Table) -> exp.Select:
    """`key_hash, operation` of every key that changed (add, update or remove): current
    rows against the snapshot in one full outer join on the key hash, row hashes compared.
    Only the two hashes are read: no key text, no mapped value."""
    c, s = "c", "s"
    ck, sk = exp.column("key_hash", c), exp.column("key_hash", s)
    return (
        exp.select(
            exp.alias_(exp.Coalesce(this=ck.copy(), expressions=[sk.copy()]), "key_hash"),
            exp.alias_(change_kind(ck, sk), "operation"),
        )
        .from_(current.subquery(c))
        .join(snapshot.copy().as_(s), on=ck.copy().eq(sk.copy()), join_type="full outer")
        .where(differs(ck, sk, hashes=["row_hash"]))
    )


def delta_of(*, candidates: exp.Query, current: exp.Select, snapshot: exp.Table) -> exp.Select:
    """`delta` restricted to `candidates` (a query of key hashes): the same rows whenever
    every key that differs is a candidate, at the cost of the candidates, not of the
    audience. Candidates come from the membership log (see `sync/engine.py`)."""
    k, c, s = "k", "c", "s"
    kk, ck, sk = exp.column("key_hash", k), exp.column("key_hash", c), exp.column("key_hash", s)
    distinct = exp.select("key_hash").distinct().from_(candidates.subquery("candidates"))
    return (
        exp.select(kk.copy(), exp.alias_(change_kind(ck, sk), "operation"))
        .from_(distinct.subquery(k))
        .join(current.subquery(c), on=ck.copy().eq(kk.copy()), join_type="left")
        .join(snapshot.copy().as_(s), on=sk.copy().eq(kk.copy()), join_type="left")
        .where(exp.and_(exp.or_(ck.copy().is_(exp.null()).not_(), sk.copy().is_(exp.null()).not_()),
                        differs(ck, sk, hashes=["row_hash"])))
    )  # fmt: skip


def changes(
    *,
    delta_table: exp.Table,
    members: exp.Table,
    snapshot: exp.Table,
    parent: ModelDef,
    fields: Sequence[MappedField],
    schema: CatalogSchema,
    dialect: str,
    now: datetime,
) -> exp.Select:
    """The delta with keys and values: `entity_key, key_hash, operation, row_hash,
    source_rows, f0…fn`, one row per changed key.

    Adds and updates find their key in the membership and their values in the parent model
    (and traits), for the delta's keys only; a key found on more than one parent row becomes
    a reject (values NULL). Removes carry the values last delivered, from the snapshot.
    """
    d, m = "d", "m"
    key = exp.column("entity_key", m)
    field_names = [f"f{i}" for i in range(len(fields))]
    keyed = (
        exp.select()
        .from_(delta_table.copy().as_(d))
        .join(
            members.copy().as_(m),
            on=exp.column("key_hash", m).eq(exp.column("key_hash", d)),
            join_type="inner",
        )
    )
    joined, values = _with_values(
        keyed, key=key, parent=parent, fields=fields, schema=schema, dialect=dialect, now=now
    )
    per_key = exp.Window(this=count_star(), partition_by=[exp.column("key_hash", d)])
    fetched = joined.select(
        exp.alias_(exp.cast(key.copy(), "VARCHAR"), "entity_key"),
        exp.column("key_hash", d),
        exp.column("operation", d),
        exp.alias_(row_hash(values, dialect), "row_hash"),
        exp.alias_(per_key, "source_rows"),
        *[exp.alias_(v, name) for v, name in zip(values, field_names, strict=True)],
    ).where(
        exp.column("operation", d).isin(exp.Literal.string("add"), exp.Literal.string("update"))
    )
    sendable = (
        exp.select("entity_key", "key_hash", "operation", "row_hash", "source_rows", *field_names)
        .from_("fetched")
        .where(exp.column("source_rows").eq(1))
    )
    duplicated = (
        exp.select(
            "entity_key", "key_hash", exp.alias_(exp.Literal.string("reject"), "operation"),
            exp.alias_(exp.null(), "row_hash"),
            exp.alias_(exp.Max(this=exp.column("source_rows")), "source_rows"),
            *[exp.alias_(exp.null(), name) for name in field_names],
        )
        .from_("fetched")
        .where(exp.column("source_rows") > 1)
        .group_by("entity_key", "key_hash")
    )  # fmt: skip
    removed_keys = (
        exp.select("key_hash")
        .from_(delta_table.copy())
        .where(exp.column("operation").eq(exp.Literal.string("remove")))
    )
    removed = (
        exp.select(
            "entity_key", "key_hash", exp.alias_(exp.Literal.string("remove"), "operation"),
            "row_hash", exp.alias_(exp.Literal.number(1), "source_rows"), *field_names,
        )
        .from_(snapshot.copy())
        .where(exp.column("key_hash").isin(query=removed_keys))
    )  # fmt: skip
    union = exp.union(sendable, duplicated, removed, distinct=False)
    return exp.select("*").from_(union.subquery("u")).with_("fetched", as_=fetched)


def current_values(
    *,
    members: exp.Table,
    parent: ModelDef,
    fields: Sequence[MappedField],
    schema: CatalogSchema,
    split: SplitRange | None,
    dialect: str,
    now: datetime,
) -> exp.Select:
    """`entity_key, key_hash, row_hash, f0…fn` for every member (of the split group): a
    full-snapshot mirror sends these. One row per parent row, so a duplicated key appears
    more than once (the caller leaves `duplicate_keys` out)."""
    m = "m"
    key = exp.column("entity_key", m)
    joined, values = _with_values(
        exp.select().from_(members.copy().as_(m)), key=key, parent=parent, fields=fields,
        schema=schema, dialect=dialect, now=now,
    )  # fmt: skip
    select = joined.select(
        exp.alias_(exp.cast(key.copy(), "VARCHAR"), "entity_key"),
        exp.column("key_hash", m),
        exp.alias_(row_hash(values, dialect), "row_hash"),
        *[exp.alias_(v, f"f{i}") for i, v in enumerate(values)],
    )
    return _in_split(select, key=key, split=split, dialect=dialect)


def first_delivery(
    *,
    members: exp.Table,
    parent: ModelDef,
    fields: Sequence[MappedField],
    schema: CatalogSchema,
    split: SplitRange | None,
    dialect: str,
    now: datetime,
) -> tuple[exp.Select, exp.Select]:
    """What a sync with an empty snapshot sends, without a delta or a changes table: every
    member (of the split group) whose key had one parent row when the membership was
    stored, with the snapshot's columns but the key hash (`entity_key, row_hash, f0…fn`)
    in key order; and the members rejected for a duplicated key (`entity_key,
    source_rows, key_hash`).

    The membership's `source_rows` decides, so no window over the parent rows is needed;
    the key order puts the rows of a key that gained a parent row since side by side, where
    the caller checks for them (sync/engine.py)."""
    m = "m"
    one_row = exp.column("source_rows", m).eq(exp.Literal.number(1))
    values = current_values(
        members=members, parent=parent, fields=fields, schema=schema, split=split,
        dialect=dialect, now=now,
    ).where(one_row)  # fmt: skip
    # No key hash: a 128-bit integer has no Arrow type to spool it as (the snapshot's is
    # computed again from the key, by the one formula).
    sent = [c for c in snapshot_columns(len(fields)) if c != "key_hash"]
    rows = exp.select(*sent).from_(values.subquery("v"))
    key = exp.column("entity_key", m)
    rejects = _in_split(
        exp.select(exp.alias_(exp.cast(key.copy(), "VARCHAR"), "entity_key"),
                   exp.column("source_rows", m), exp.column("key_hash", m))
        .from_(members.copy().as_(m))
        .where(exp.column("source_rows", m) > 1),
        key=key, split=split, dialect=dialect,
    )  # fmt: skip
    return rows.order_by(exp.column("entity_key")), rejects


def snapshot_columns(field_count: int) -> list[str]:
    """A snapshot's columns: the key, its hash, the hash of the delivered values, the values."""
    return ["entity_key", "key_hash", "row_hash", *(f"f{i}" for i in range(field_count))]


def empty_like(rows: exp.Table | exp.Select, *, field_count: int) -> exp.Select:
    """The snapshot's columns typed as in `rows`, no rows: creates a snapshot table."""
    return exp.select(*snapshot_columns(field_count)).from_(aliased(rows, "c")).where(exp.false())


def aliased(source: exp.Table | exp.Select, alias: str) -> exp.Expression:
    """A table or a query as a FROM/JOIN item named `alias`."""
    if isinstance(source, exp.Select):
        return source.subquery(alias)
    return source.copy().as_(alias)


def duplicate_keys(*, members: exp.Table, parent: ModelDef, dialect: str) -> exp.Select:
    """Members whose key has more than one row in the parent model: they are not sent and
    are reported as failed rows until the source is fixed.

    Grouped on the parent model alone (no join, no hashing), then narrowed to members. Only
    a full-snapshot mirror needs it (it streams every member); diffs find duplicates among
    the keys they fetch.
    """
    key = exp.cast(exp.column(parent.primary_key, "p", quoted=True), "VARCHAR")
    counted = (
        exp.select(exp.alias_(key, "entity_key"), exp.alias_(count_star(), "source_rows"))
        .from_(_model_source(parent, dialect).as_("p"))
        .group_by(key.copy())
        .having(count_star() > 1)
    )
    member_keys = exp.select(exp.cast(exp.column("entity_key"), "VARCHAR")).from_(members.copy())
    return (
        exp.select("entity_key", "source_rows")
        .from_(counted.subquery("d"))
        .where(exp.column("entity_key").isin(query=member_keys))
    )


def _with_values(
    select: exp.Select,
    *,
    key: exp.Column,
    parent: ModelDef,
    fields: Sequence[MappedField],
    schema: CatalogSchema,
    dialect: str,
    now: datetime,
) -> tuple[exp.Select, list[exp.Expression]]:
    """`select` joined to the parent rows of `key` (inner) and to each mapped trait (left),
    and the mapped values in field order."""
    select = select.join(
        _model_source(parent, dialect).as_("p"),
        on=exp.column(parent.primary_key, "p", quoted=True).eq(key.copy()),
        join_type="inner",
    )
    values: list[exp.Expression] = []
    for i, field in enumerate(fields):
        if field.column is not None:
            values.append(exp.column(field.column, "p", quoted=True))
            continue
        trait = schema.traits[field.trait_id or ""]
        compiled = compile_trait_values(trait, schema=schema, dialect=dialect, now=now)
        alias = f"t{i}"
        select = select.join(
            exp.paren(compiled.expression.copy()).as_(alias),  # type: ignore[arg-type]
            on=exp.column("entity_key", alias).eq(key.copy()),
            join_type="left",
        )
        values.append(exp.column("value", alias))
    return select, values


def _in_split(
    select: exp.Select, *, key: exp.Expression, split: SplitRange | None, dialect: str
) -> exp.Select:
    """`select` narrowed to the members of one split group (unchanged without a split)."""
    if split is None:
        return select
    bucket = split_bucket(split_id=split.split_id, key=key.copy(), dialect=dialect)
    return select.where(exp.and_(bucket >= split.low, bucket < split.high))


def split_bucket(*, split_id: str, key: exp.Expression, dialect: str) -> exp.Expression:
    """bucket = int(first 8 hex digits of md5('<split_id>:<entity key>')) mod 10000.

    The same number in every engine (and in Python: int(md5(...)[:8], 16) % 10000), stable
    while the split exists, independent of any other split or audience.
    """
    text = exp.Concat(expressions=[exp.Literal.string(f"{split_id}:"), exp.cast(key, "VARCHAR")])
    prefix = exp.Left(this=exp.MD5(this=text), expression=exp.Literal.number(8))
    if dialect == "postgres":
        as_int = sqlglot.parse_one("CAST(CAST('x' || p AS BIT(32)) AS BIGINT)", dialect="postgres")
        as_int = as_int.transform(
            lambda n: prefix.copy() if isinstance(n, exp.Column) and n.name == "p" else n
        )
    else:
        as_int = exp.cast(exp.DPipe(this=exp.Literal.string("0x"), expression=prefix), "BIGINT")
    return exp.Mod(this=exp.paren(as_int), expression=exp.Literal.number(BUCKETS))


def _model_source(model: ModelDef, dialect: str) -> exp.Expression:
    # The compiler's own reading of a model, sandbox rules included (filters/user_sql.py).
    return model_rows(model, dialect=dialect, path="parent_model_id")
