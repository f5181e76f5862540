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
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlglot import exp


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
