"""Map a warehouse's type spelling onto the filter language's column types, and tell the
exact range of integer and DECIMAL types (for comparisons with numbers beyond it)."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from decimal import Decimal

from sqlglot import exp
from sqlglot.errors import ParseError

from composable_dagster.filters.schema import ColumnType

_T = exp.DataType.Type
_FAMILIES: tuple[tuple[frozenset[exp.DataType.Type], ColumnType], ...] = (
    (frozenset(exp.DataType.TEXT_TYPES), ColumnType.TEXT),
    (frozenset({_T.UUID, _T.ENUM}), ColumnType.TEXT),
    (frozenset(exp.DataType.REAL_TYPES | exp.DataType.INTEGER_TYPES), ColumnType.NUMBER),
    (frozenset({_T.BOOLEAN}), ColumnType.BOOLEAN),
    (frozenset(exp.DataType.TEMPORAL_TYPES), ColumnType.TIMESTAMP),
)
# Integer types by (bits, signed).
_INTEGER_BITS: dict[exp.DataType.Type, tuple[int, bool]] = {
    _T.TINYINT: (8, True),
    _T.SMALLINT: (16, True),
    _T.MEDIUMINT: (24, True),
    _T.INT: (32, True),
    _T.BIGINT: (64, True),
    _T.INT128: (128, True),
    _T.INT256: (256, True),
    _T.UTINYINT: (8, False),
    _T.USMALLINT: (16, False),
    _T.UMEDIUMINT: (24, False),
    _T.UINT: (32, False),
    _T.UBIGINT: (64, False),
    _T.UINT128: (128, False),
    _T.UINT256: (256, False),
}
MAX_DECIMAL_PRECISION = 38  # DuckDB, Snowflake, Databricks and BigQuery NUMERIC stop here
_UNBOUNDED_DECIMAL_DIALECTS = frozenset({"postgres"})


def _parse(type_name: str, dialect: str) -> exp.DataType | None:
    try:
        return exp.DataType.build(type_name, dialect=dialect, udt=True)
    except (ParseError, ValueError):
        return None


def column_type_from_sql(type_name: str, *, dialect: str = "duckdb") -> ColumnType:
    """Classify a type as the warehouse spells it (`VARCHAR`, `DOUBLE PRECISION`, ...).

    Unknown or composite types are `OTHER`: only null checks apply to them.
    """
    data_type = _parse(type_name, dialect)
    if data_type is None:
        return ColumnType.OTHER
    for members, column_type in _FAMILIES:
        if data_type.this in members:
            return column_type
    return ColumnType.OTHER


@dataclass(frozen=True, slots=True)
class ExactRange:
    """The values an integer or DECIMAL(p, s) column holds, `low` to `high`, and the values
    one step past them (`below`, `above`). Built from integers and strings only: Decimal
    arithmetic would round 38-digit bounds to the context's 28 digits."""

    low: Decimal
    high: Decimal
    below: Decimal
    above: Decimal
    scale: int

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high  # exact for int, float and Decimal alike

    def beyond(self, value: float) -> exp.Expression | None:
        """For a number outside the range, the value one step past the range on its side as
        a typed literal, or None when no DECIMAL type holds it (HUGEINT, DECIMAL(38, s)).

        Every comparison of a column value with that literal has the same answer as with
        `value` (both lie past every value of the column), and it binds on every engine.
        """
        edge = self.above if value > self.high else self.below
        digits = len(str(abs(int(edge)))) + self.scale
        if digits > MAX_DECIMAL_PRECISION:
            return None
        params = [exp.DataTypeParam(this=exp.Literal.number(n)) for n in (digits, self.scale)]
        decimal = exp.DataType(this=_T.DECIMAL, expressions=params)
        return exp.cast(exp.Literal.number(format(edge, "f")), decimal)


_UNBOUNDED = ExactRange(
    Decimal("-Infinity"), Decimal("Infinity"), Decimal("-Infinity"), Decimal("Infinity"), scale=0
)


@functools.lru_cache(maxsize=512)  # called once per number condition with few distinct types
def exact_range(type_name: str, *, dialect: str = "duckdb") -> ExactRange | None:
    """The range of an integer or DECIMAL(p, s) type (unbounded for PostgreSQL's NUMERIC);
    None for other types (floating point, unparseable spellings)."""
    data_type = _parse(type_name, dialect) if type_name else None
    if data_type is None:
        return None
    if data_type.this in _INTEGER_BITS:
        bits, signed = _INTEGER_BITS[data_type.this]
        low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
        return ExactRange(*map(Decimal, (low, high, low - 1, high + 1)), scale=0)
    if data_type.this != _T.DECIMAL:
        return None
    if not data_type.expressions:
        # PostgreSQL's NUMERIC without a precision (also how information_schema spells every
        # NUMERIC) compares exactly with a literal of any size: no range to step past.
        return _UNBOUNDED if dialect in _UNBOUNDED_DECIMAL_DIALECTS else None
    try:
        precision, scale = [*(int(p.this.name) for p in data_type.expressions), 0][:2]
    except (AttributeError, ValueError):
        return None
    if not 0 <= scale <= precision:
        return None
    nines = 10**precision - 1
    edge = 10 ** (precision - scale)
    return ExactRange(
        Decimal(f"-{nines}E-{scale}"),
        Decimal(f"{nines}E-{scale}"),
        Decimal(-edge),
        Decimal(edge),
        scale=scale,
    )
