"""Hashes that identify members and their values in the activation store, per dialect.

Pure: sqlglot expressions in, sqlglot expressions out.

- `key_hash`: 128 bits of MD5 over the key's text. Membership tables and sync snapshots
  are joined on it instead of the key itself: a 10M-row join on a 128-bit integer takes
  about half the time of the same join on strings (docs/benchmarks.md), and 128 bits make
  a collision among 10^10 keys about as likely as a UUID v4 clash (p ≈ 10^-19), so the
  hash stands for the key. MD5 is defined by its RFC, so stored hashes stay valid across
  engine versions.
- `row_hash`: 64 bits over a row's mapped values, compared to tell an update from an
  unchanged member. DuckDB's `hash()` is 2.6 times faster than MD5 here, but its stability across
  versions is undocumented: snapshots record the engine version (sync/plan.py
  `mapping_fingerprint`), and a change of engine resends every member once instead of
  trusting old hashes.

Comparing two versions (a new membership with the previous one, current members with a
sync's snapshot) is a join on `key_hash`: `change_kind` names what each joined row is, and
`differs` keeps the rows that changed.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlglot import exp

from composable_dagster.filters.compile import count_star


def key_hash(key: exp.Expression, dialect: str) -> exp.Expression:
    """128-bit hash of an entity key's text: UHUGEINT on DuckDB, UUID on PostgreSQL."""
    text = exp.cast(key.copy(), "VARCHAR")
    if dialect == "duckdb":
        return exp.Anonymous(this="md5_number", expressions=[text])
    if dialect == "postgres":
        return exp.cast(exp.MD5(this=text), "UUID")
    return exp.MD5(this=text)  # hex text: engines without a 128-bit integer type


def row_hash(values: Sequence[exp.Expression], dialect: str) -> exp.Expression:
    """Hash of a row's values (NULLs included), in order: UBIGINT on DuckDB, hex text elsewhere."""
    if dialect == "duckdb":
        return exp.Anonymous(this="hash", expressions=[v.copy() for v in values])
    # The trailing '' keeps a one-value row a row, so `(NULL)` and `()` never hash alike.
    row = exp.Tuple(expressions=[v.copy() for v in values] + [exp.Literal.string("")])
    return exp.MD5(this=exp.cast(row, "TEXT"))


def single_row_hash(row_hash_of_row: exp.Expression) -> exp.Expression:
    """Aggregate over a key's source rows: its row hash, or NULL when the key has several
    rows (a duplicated key; NULL never equals a delivered hash, so the key stays changed)."""
    single = exp.EQ(this=count_star(), expression=exp.Literal.number(1))
    return exp.Case(ifs=[exp.If(this=single, true=exp.Min(this=row_hash_of_row))])


def change_kind(new_key: exp.Column, old_key: exp.Column) -> exp.Expression:
    """'add', 'remove' or 'update': a row of a join of a new version with an old one on the
    key hash, by the side its key is missing from (old: added; new: removed)."""
    return exp.Case(
        ifs=[
            exp.If(this=old_key.copy().is_(exp.null()), true=exp.Literal.string("add")),
            exp.If(this=new_key.copy().is_(exp.null()), true=exp.Literal.string("remove")),
        ],
        default=exp.Literal.string("update"),
    )


def differs(new_key: exp.Column, old_key: exp.Column, *, hashes: Sequence[str]) -> exp.Expression:
    """The key is on one side only, or both sides (the tables of the two keys) hold another
    value in one of the `hashes` columns, NULLs compared as values."""
    changed = [
        exp.NullSafeNEQ(
            this=exp.column(name, new_key.table), expression=exp.column(name, old_key.table)
        )
        for name in hashes
    ]
    return exp.or_(new_key.copy().is_(exp.null()), old_key.copy().is_(exp.null()), *changed)
