"""Running compiled audience queries: counts, previews and per-node explanations."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from composable_dagster.filters import (
    CatalogSchema,
    compile_count,
    compile_members,
    compile_preview,
    parse_filter_tree,
)
from composable_dagster.filters.sampling import compile_sampled_count, sampling_supported
from composable_dagster.warehouse.connection import QueryResult, Warehouse

EstimateMode = Literal["auto", "exact", "sampled"]

# Below this many parent rows an exact count is fast enough (≤ 50 ms at 100k here).
SAMPLE_ABOVE_ROWS = 1_000_000
SAMPLE_PERCENT = 5.0
# `auto` keeps a sampled answer only when its 95% interval is within ±3% of it.
MAX_RELATIVE_HALF_WIDTH = 0.03
_Z95 = 1.96
# What `auto` last learned of each parent model's size (the sampled query returns it), so
# a model known to be small is counted exactly at once: one query, not the sample and then
# the count. A size this old is asked again; a stale one only picks the slower path once,
# it never changes an answer (the exact count is exact, a sample is kept only if precise).
PARENT_ROWS_TTL_SECONDS = 300.0
_parent_rows: dict[tuple[str, str, str], tuple[float, int]] = {}


@dataclass(frozen=True, slots=True)
class NodeExplanation:
    """One node of a tree: where it is, what it compiles to, how many parents it matches."""

    path: str
    type: str
    sql: str
    member_count: int


@dataclass(frozen=True, slots=True)
class Estimate:
    """A member count; when sampled, with the sample share and a 95% confidence interval."""

    size: int
    sampled: bool = False
    sample_percent: float | None = None
    confidence_interval: tuple[int, int] | None = None


def estimate_members(
    warehouse: Warehouse,
    *,
    tree: Mapping[str, Any],
    parent_model_id: str,
    schema: CatalogSchema,
    now: datetime,
    mode: EstimateMode = "auto",
    audience_id: str | None = None,
) -> Estimate:
    """Count members exactly, or from a block sample of a large parent model.

    `auto` samples only when the parent has at least SAMPLE_ABOVE_ROWS rows, and falls back
    to the exact count when the sampled interval is wider than ±3% (small segments). A
    parent it has seen below that size recently is counted exactly with no sample first.
    """
    common = {"tree": tree, "parent_model_id": parent_model_id, "schema": schema, "now": now,
              "audience_id": audience_id}  # fmt: skip
    can_sample = sampling_supported(
        parent_model_id=parent_model_id, schema=schema, dialect=warehouse.dialect
    )
    parent = schema.models[parent_model_id]
    size_key = (str(warehouse.url), parent_model_id, parent.table or parent.sql or "")
    known = _parent_rows.get(size_key)
    if known is not None and time.monotonic() - known[0] > PARENT_ROWS_TTL_SECONDS:
        known = None
    small = known is not None and known[1] < SAMPLE_ABOVE_ROWS
    if can_sample and (mode == "sampled" or (mode == "auto" and not small)):
        query = compile_sampled_count(dialect=warehouse.dialect, percent=SAMPLE_PERCENT, **common)
        row = warehouse.fetch(query.sql).rows[0]
        _parent_rows[size_key] = (time.monotonic(), int(row["table_rows"]))
        sampled = _scale(
            sample_rows=int(row["sample_rows"]),
            sample_matches=int(row["sample_matches"]),
            table_rows=int(row["table_rows"]),
        )
        if mode == "sampled":
            return sampled
        if int(row["table_rows"]) >= SAMPLE_ABOVE_ROWS and _precise_enough(sampled):
            return sampled
    return Estimate(size=count_members(warehouse, **common))


def _scale(*, sample_rows: int, sample_matches: int, table_rows: int) -> Estimate:
    if sample_rows == 0:
        return Estimate(size=0, sampled=True, sample_percent=SAMPLE_PERCENT,
                        confidence_interval=(0, table_rows))  # fmt: skip
    share = sample_matches / sample_rows
    # Binomial interval; block sampling clusters rows, so this is a lower bound on the error.
    half_width = _Z95 * math.sqrt(share * (1 - share) / sample_rows) * table_rows
    size = round(share * table_rows)
    low, high = max(0, math.floor(size - half_width)), min(table_rows, math.ceil(size + half_width))
    return Estimate(size=size, sampled=True, sample_percent=SAMPLE_PERCENT,
                    confidence_interval=(low, high))  # fmt: skip


def _precise_enough(estimate: Estimate) -> bool:
    if estimate.size == 0 or estimate.confidence_interval is None:
        return False
    low, high = estimate.confidence_interval
    return (high - low) / 2 <= MAX_RELATIVE_HALF_WIDTH * estimate.size


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
    return warehouse.preview(query.expression)


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
