"""Running compiled audience queries: counts, previews and per-node explanations."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from composable_dagster.filters import (
    CatalogSchema,
    compile_count,
    compile_members,
    compile_preview,
    parse_filter_tree,
)
from composable_dagster.warehouse.connection import QueryResult, Warehouse


@dataclass(frozen=True, slots=True)
class NodeExplanation:
    """One node of a tree: where it is, what it compiles to, how many parents it matches."""

    path: str
    type: str
    sql: str
    member_count: int


def count_members(
    warehouse: Warehouse,
    *,
    tree: Mapping[str, Any],
    parent_model_id: str,
    schema: CatalogSchema,
    now: datetime,
    audience_id: str | None = None,
) -> int:
    query = compile_count(
        tree,
        parent_model_id=parent_model_id,
        schema=schema,
        now=now,
        dialect=warehouse.dialect,
        audience_id=audience_id,
    )
    return int(warehouse.scalar(query.sql) or 0)


def preview_members(
    warehouse: Warehouse,
    *,
    tree: Mapping[str, Any],
    parent_model_id: str,
    schema: CatalogSchema,
    now: datetime,
    limit: int = 100,
    audience_id: str | None = None,
) -> QueryResult:
    query = compile_preview(
        tree,
        parent_model_id=parent_model_id,
        schema=schema,
        now=now,
        dialect=warehouse.dialect,
        limit=limit,
        audience_id=audience_id,
    )
    return warehouse.fetch(query.sql)


def explain_tree(
    warehouse: Warehouse,
    *,
    tree: Mapping[str, Any],
    parent_model_id: str,
    schema: CatalogSchema,
    now: datetime,
    audience_id: str | None = None,
) -> list[NodeExplanation]:
    """Every group and condition of the tree, with its own SQL and member count.

    Nested filters inside relation/event conditions belong to another model; they are
    part of their condition's SQL rather than separate rows.
    """
    parse_filter_tree(tree)  # a bad tree fails here, with its path, before any query runs
    explanations = []
    for path, node in _nodes(tree, "filter_tree"):
        members = compile_members(
            node,
            parent_model_id=parent_model_id,
            schema=schema,
            now=now,
            dialect=warehouse.dialect,
            audience_id=audience_id,
        )
        count = count_members(
            warehouse,
            tree=node,
            parent_model_id=parent_model_id,
            schema=schema,
            now=now,
            audience_id=audience_id,
        )
        label = node.get("condition_type") if node["type"] == "condition" else node["type"]
        explanations.append(
            NodeExplanation(path=path, type=label, sql=members.sql, member_count=count)
        )
    return explanations


def _nodes(node: Mapping[str, Any], path: str) -> Iterator[tuple[str, Mapping[str, Any]]]:
    yield path, node
    if node.get("type") in ("and", "or", "not"):
        for i, child in enumerate(node.get("children", [])):
            yield from _nodes(child, f"{path}.children[{i}]")
