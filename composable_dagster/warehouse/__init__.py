"""Warehouse access: connections, column discovery and query execution."""

from composable_dagster.warehouse.connection import (
    QueryResult,
    Warehouse,
    as_sequence,
    parse_select,
)

__all__ = ["QueryResult", "Warehouse", "as_sequence", "parse_select"]
