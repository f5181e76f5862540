"""Map a warehouse's type spelling onto the filter language's column types."""

from __future__ import annotations

from sqlglot import exp
from sqlglot.errors import ParseError

from composable_dagster.filters.schema import ColumnType

_FAMILIES: tuple[tuple[frozenset[exp.DataType.Type], ColumnType], ...] = (
    (frozenset(exp.DataType.TEXT_TYPES), ColumnType.TEXT),
    (frozenset({exp.DataType.Type.UUID, exp.DataType.Type.ENUM}), ColumnType.TEXT),
    (frozenset(exp.DataType.REAL_TYPES | exp.DataType.INTEGER_TYPES), ColumnType.NUMBER),
    (frozenset({exp.DataType.Type.BOOLEAN}), ColumnType.BOOLEAN),
    (frozenset(exp.DataType.TEMPORAL_TYPES), ColumnType.TIMESTAMP),
)


def column_type_from_sql(type_name: str, *, dialect: str = "duckdb") -> ColumnType:
    """Classify a type as the warehouse spells it (`VARCHAR`, `DOUBLE PRECISION`, ...).

    Unknown or composite types are `OTHER`: only null checks apply to them.
    """
    try:
        data_type = exp.DataType.build(type_name, dialect=dialect, udt=True)
    except (ParseError, ValueError):
        return ColumnType.OTHER
    for members, column_type in _FAMILIES:
        if data_type.this in members:
            return column_type
    return ColumnType.OTHER
