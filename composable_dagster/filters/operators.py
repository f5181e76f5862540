"""The comparison operators as data: value shape, allowed column types and SQL builder.

Property and trait conditions share this table. A builder receives the compared expression
and the already-literal values and returns a predicate that is TRUE, FALSE or, only when the
compared value is NULL, NULL; the compiler turns that NULL into "not matched" where needed.
"""

from __future__ import annotations

import enum
import math
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlglot import exp

from composable_dagster.filters.errors import FilterError, join_path
from composable_dagster.filters.schema import ColumnType, ResultType
from composable_dagster.filters.sql_types import ExactRange
from composable_dagster.filters.timewindow import parse_timestamp


class ValueShape(enum.StrEnum):
    NONE = "none"  # is_null, is_true: no value
    SCALAR = "scalar"  # one value
    LIST = "list"  # a non-empty list (a lone scalar is read as a one-item list)
    RANGE = "range"  # [low, high] or value + value2, both inclusive


Builder = Callable[[exp.Expression, Sequence[exp.Expression], str], exp.Expression]


@dataclass(frozen=True, slots=True)
class OperatorSpec:
    name: str
    shape: ValueShape
    types: frozenset[ColumnType]
    build: Builder
    nonempty_text: bool = False  # substring operators: an empty needle is almost surely a bug


_T, _N, _B, _TS = ColumnType.TEXT, ColumnType.NUMBER, ColumnType.BOOLEAN, ColumnType.TIMESTAMP
_ANY = frozenset(ColumnType)


def _contains(col: exp.Expression, needle: exp.Expression, dialect: str) -> exp.Expression:
    # A function, not LIKE: `%`, `_` and `\` in the needle stay literal on every engine
    # without per-dialect ESCAPE rules (BigQuery has no ESCAPE clause at all).
    if dialect == "duckdb":
        return exp.Contains(this=col, expression=needle)
    return exp.GT(this=exp.StrPosition(this=col, substr=needle), expression=exp.Literal.number(0))


def _starts(col: exp.Expression, needle: exp.Expression, dialect: str) -> exp.Expression:
    return exp.StartsWith(this=col, expression=needle)


def _ends(col: exp.Expression, needle: exp.Expression, dialect: str) -> exp.Expression:
    if dialect == "duckdb":
        return exp.EndsWith(this=col, expression=needle)
    # PostgreSQL has no ends_with(); RIGHT(col, n) = needle is portable and exact.
    length = exp.Literal.number(len(needle.this))
    return exp.EQ(this=exp.Right(this=col, expression=length), expression=needle)


def _negated(inner: Builder) -> Builder:
    def build(col: exp.Expression, vals: Sequence[exp.Expression], dialect: str):
        return exp.Not(this=exp.Paren(this=inner(col, vals, dialect)))

    return build


def _binary(kind: type[exp.Binary]) -> Builder:
    return lambda col, vals, dialect: kind(this=col, expression=vals[0])


def _between(col: exp.Expression, vals: Sequence[exp.Expression], dialect: str):
    return exp.Between(this=col, low=vals[0], high=vals[1])


def _in(col: exp.Expression, vals: Sequence[exp.Expression], dialect: str):
    return exp.In(this=col, expressions=list(vals))


OPERATORS: Mapping[str, OperatorSpec] = {
    spec.name: spec
    for spec in (
        OperatorSpec("equals", ValueShape.SCALAR, frozenset({_T, _N, _B, _TS}), _binary(exp.EQ)),
        OperatorSpec(
            "not_equals", ValueShape.SCALAR, frozenset({_T, _N, _B, _TS}), _binary(exp.NEQ)
        ),
        OperatorSpec("greater_than", ValueShape.SCALAR, frozenset({_N, _TS}), _binary(exp.GT)),
        OperatorSpec("less_than", ValueShape.SCALAR, frozenset({_N, _TS}), _binary(exp.LT)),
        OperatorSpec(
            "greater_than_or_equal", ValueShape.SCALAR, frozenset({_N, _TS}), _binary(exp.GTE)
        ),
        OperatorSpec(
            "less_than_or_equal", ValueShape.SCALAR, frozenset({_N, _TS}), _binary(exp.LTE)
        ),
        OperatorSpec(
            "contains",
            ValueShape.SCALAR,
            frozenset({_T}),
            lambda c, v, d: _contains(c, v[0], d),
            nonempty_text=True,
        ),
        OperatorSpec(
            "not_contains",
            ValueShape.SCALAR,
            frozenset({_T}),
            _negated(lambda c, v, d: _contains(c, v[0], d)),
            nonempty_text=True,
        ),
        OperatorSpec(
            "starts_with",
            ValueShape.SCALAR,
            frozenset({_T}),
            lambda c, v, d: _starts(c, v[0], d),
            nonempty_text=True,
        ),
        OperatorSpec(
            "not_starts_with",
            ValueShape.SCALAR,
            frozenset({_T}),
            _negated(lambda c, v, d: _starts(c, v[0], d)),
            nonempty_text=True,
        ),
        OperatorSpec(
            "ends_with",
            ValueShape.SCALAR,
            frozenset({_T}),
            lambda c, v, d: _ends(c, v[0], d),
            nonempty_text=True,
        ),
        OperatorSpec(
            "not_ends_with",
            ValueShape.SCALAR,
            frozenset({_T}),
            _negated(lambda c, v, d: _ends(c, v[0], d)),
            nonempty_text=True,
        ),
        OperatorSpec(
            "is_null", ValueShape.NONE, _ANY, lambda c, v, d: exp.Is(this=c, expression=exp.Null())
        ),
        OperatorSpec(
            "is_not_null",
            ValueShape.NONE,
            _ANY,
            lambda c, v, d: exp.Not(this=exp.Is(this=c, expression=exp.Null())),
        ),
        OperatorSpec("in", ValueShape.LIST, frozenset({_T, _N, _TS}), _in),
        OperatorSpec("not_in", ValueShape.LIST, frozenset({_T, _N, _TS}), _negated(_in)),
        OperatorSpec("between", ValueShape.RANGE, frozenset({_N, _TS}), _between),
        OperatorSpec("not_between", ValueShape.RANGE, frozenset({_N, _TS}), _negated(_between)),
        OperatorSpec(
            "is_true",
            ValueShape.NONE,
            frozenset({_B}),
            lambda c, v, d: exp.EQ(this=c, expression=exp.true()),
        ),
        OperatorSpec(
            "is_false",
            ValueShape.NONE,
            frozenset({_B}),
            lambda c, v, d: exp.EQ(this=c, expression=exp.false()),
        ),
    )
}

RESULT_COLUMN_TYPES: Mapping[ResultType, ColumnType] = {
    ResultType.STRING: ColumnType.TEXT,
    ResultType.NUMBER: ColumnType.NUMBER,
    ResultType.BOOLEAN: ColumnType.BOOLEAN,
    ResultType.DATE: ColumnType.TIMESTAMP,
    ResultType.TIMESTAMP: ColumnType.TIMESTAMP,
}


def timestamp_literal(moment: Any) -> exp.Expression:
    """A typed timestamp literal for a naive UTC datetime."""
    text = moment.isoformat(sep=" ", timespec="microseconds" if moment.microsecond else "seconds")
    return exp.cast(exp.Literal.string(text), exp.DataType.build("timestamp"))


# Integers and float magnitudes every engine binds against every numeric column. Beyond
# them DuckDB types an integer HUGEINT, UHUGEINT or BIGNUM, which it cannot cast to a DECIMAL
# (or BIGINT) column (`amount < 10^40` failed to bind instead of matching every row), and
# PostgreSQL types an `IN (...)` list on a REAL column as REAL, which 1e40 or 1e-40 overflow.
_PLAIN_INTEGERS = range(-(2**63), 2**63)
_PLAIN_MAGNITUDES = (1e-30, float(2**63))


def _plain(value: float) -> exp.Literal:
    return exp.Literal.number(repr(value) if isinstance(value, float) else value)


def number_literal(value: float, *, path: str, exact: ExactRange | None = None) -> exp.Expression:
    """A JSON number as a literal that binds against the compared column on every engine.

    Args:
        value: The number.
        path: JSON path of the value, for errors.
        exact: The range of the column's type when it is an integer or DECIMAL type.

    Within the column's exact range, or of ordinary magnitude, a number stays a plain
    literal, compared exactly. Past an exact range it is replaced by the value one step past
    the range (`ExactRange.beyond`), which every comparison answers the same way:
    ``less_than 1e40`` on a DECIMAL(18,2) matches every non-NULL row, exactly. Otherwise it
    becomes ``CAST(v AS DOUBLE)``, which is how the engines compare a floating-point column
    anyway.

    Raises:
        FilterError: NaN, an infinity, or an integer beyond the range of a DOUBLE.
    """
    if isinstance(value, float) and not math.isfinite(value):
        raise FilterError(path, f"expected a finite number, got {value!r}")
    if isinstance(value, int) and abs(value) > sys.float_info.max:
        raise FilterError(path, "number out of range: at most about 1.8e308 in magnitude")
    if exact is not None:
        if exact.contains(value):
            return _plain(value)
        beyond = exact.beyond(value)
        if beyond is not None:
            return beyond
    elif isinstance(value, int):
        if value in _PLAIN_INTEGERS:
            return _plain(value)
    elif value == 0 or _PLAIN_MAGNITUDES[0] <= abs(value) <= _PLAIN_MAGNITUDES[1]:
        return _plain(value)
    return exp.cast(exp.Literal.number(repr(float(value))), exp.DataType.build("double"))


def literal(
    value: Any, column_type: ColumnType, *, path: str, exact: ExactRange | None = None
) -> exp.Expression:
    """Turn one JSON value into a sqlglot literal of the column's type.

    `exact` is the range of a number column's integer or DECIMAL type, if known.

    Raises:
        FilterError: The value does not fit the column type.
    """
    if value is None:
        raise FilterError(path, "a value is required (use is_null to match NULL)")
    if column_type is ColumnType.TEXT:
        if not isinstance(value, str):
            raise FilterError(path, f"expected a string, got {value!r}")
        return exp.Literal.string(value)
    if column_type is ColumnType.NUMBER:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise FilterError(path, f"expected a number, got {value!r}")
        return number_literal(value, path=path, exact=exact)
    if column_type is ColumnType.BOOLEAN:
        if not isinstance(value, bool):
            raise FilterError(path, f"expected true or false, got {value!r}")
        return exp.true() if value else exp.false()
    if column_type is ColumnType.TIMESTAMP:
        return timestamp_literal(parse_timestamp(value, path=path))
    raise FilterError(path, f"values of type {column_type} cannot be compared")


def operator_spec(name: str, column_type: ColumnType, *, path: str, what: str) -> OperatorSpec:
    """Look up an operator and check it applies to `column_type`.

    Args:
        name: The operator name from the tree.
        column_type: Type of the compared column or trait.
        path: JSON path of the condition.
        what: Human description of the compared thing, e.g. ``column 'age'``.
    """
    spec = OPERATORS.get(name)
    if spec is None:
        known = ", ".join(OPERATORS)
        raise FilterError(
            join_path(path, "operator"), f"unknown operator {name!r}; expected one of {known}"
        )
    if column_type not in spec.types:
        raise FilterError(
            join_path(path, "operator"),
            f"operator '{name}' does not apply to {what} of type {column_type}",
        )
    return spec


def operator_values(
    spec: OperatorSpec,
    column_type: ColumnType,
    value: Any,
    value2: Any,
    *,
    path: str,
    exact: ExactRange | None = None,
) -> tuple[exp.Expression, ...]:
    """Check the value shape of a condition and return its literals (see `literal`)."""

    def lit(item: Any, item_path: str) -> exp.Expression:
        return literal(item, column_type, path=item_path, exact=exact)

    value_path = join_path(path, "value")
    if spec.shape is ValueShape.NONE:
        return ()
    if spec.shape is ValueShape.SCALAR:
        if isinstance(value, list | tuple):
            raise FilterError(value_path, f"operator '{spec.name}' takes one value, not a list")
        scalar = lit(value, value_path)
        if spec.nonempty_text and value == "":
            raise FilterError(value_path, f"operator '{spec.name}' needs a non-empty string")
        return (scalar,)
    if spec.shape is ValueShape.LIST:
        items = list(value) if isinstance(value, list | tuple) else [value]
        if not items or value is None:
            raise FilterError(value_path, f"operator '{spec.name}' needs a non-empty list")
        return tuple(lit(item, join_path(value_path, i)) for i, item in enumerate(items))
    # RANGE
    if isinstance(value, list | tuple):
        if len(value) != 2 or value2 is not None:
            raise FilterError(value_path, f"operator '{spec.name}' needs [low, high]")
        low, high = value
        return (lit(low, join_path(value_path, 0)), lit(high, join_path(value_path, 1)))
    if value2 is None:
        raise FilterError(
            join_path(path, "value2"), f"operator '{spec.name}' needs value2 or value: [low, high]"
        )
    return (lit(value, value_path), lit(value2, join_path(path, "value2")))
