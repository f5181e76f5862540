"""Warehouse access: connections, column discovery and query execution."""

from composable_dagster.warehouse.connection import (
    QueryResult,
    Warehouse,
    as_sequence,
    json_value,
    release_held_instances,
)

__all__ = ["QueryResult", "Warehouse", "as_sequence", "json_value", "release_held_instances"]
