"""Sync engine fixtures: a real DuckDB warehouse and activation store, memberships set by a
score threshold, and jobs for real destinations."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pytest

from composable_dagster.destinations import destination_type
from composable_dagster.destinations.pii import HASHED_FIELDS
from composable_dagster.filters import compile_members
from composable_dagster.filters.schema import (
    AudienceDef,
    CatalogSchema,
    Column,
    ColumnType,
    EntityType,
    ModelDef,
)
from composable_dagster.sync.engine import SafetyConfig, SyncJob, SyncReport, run_sync
from composable_dagster.sync.plan import SplitRange, SyncMode, resolve_field_mapping
from composable_dagster.warehouse.activation import ActivationStore

CUSTOMERS = 1_000
SYNC_ID = "5e1f0000-0000-4000-8000-000000000001"
AUDIENCE_ID = "a0d10000-0000-4000-8000-000000000001"
MAPPING = [
    {"source_column": "email", "destination_field": "hashedEmail"},
    {"source_column": "score", "destination_field": "score"},
    {"source_column": "country", "destination_field": "country"},
]

PARENT = ModelDef(
    id="customers",
    name="customers",
    entity_type=EntityType.PARENT,
    primary_key="customer_id",
    columns={
        "customer_id": Column("customer_id", ColumnType.TEXT),
        "email": Column("email", ColumnType.TEXT),
        "score": Column("score", ColumnType.NUMBER),
        "country": Column("country", ColumnType.TEXT),
    },
    table="analytics.customers",
)
SCHEMA = CatalogSchema(
    models={"customers": PARENT},
    audiences={AUDIENCE_ID: AudienceDef(AUDIENCE_ID, "A", "customers", {})},
)


def key(i: int) -> str:
    return f"C{i:04d}"


@dataclass
class World:
    """One warehouse + activation store; `members(low, high)` re-materializes the audience
    (scores are 0..999, one customer each)."""

    warehouse: Path
    store: ActivationStore
    tmp: Path
    runs: int = 0

    def members(self, low: int, high: int = CUSTOMERS) -> set[str]:
        """Materialize the audience as customers with low ≤ score < high."""
        tree = {"type": "and", "children": [
            {"type": "condition", "condition_type": "property", "column": "score",
             "operator": "greater_than_or_equal", "value": low},
            {"type": "condition", "condition_type": "property", "column": "score",
             "operator": "less_than", "value": high}]}  # fmt: skip
        query = compile_members(
            tree, parent_model_id="customers", schema=SCHEMA, now=datetime.now(UTC)
        )
        self.store.replace_members(audience_id=AUDIENCE_ID, members=query.expression)
        return {key(i) for i in range(low, min(high, CUSTOMERS))}

    def execute(self, sql: str) -> None:
        """Change the warehouse (the store must not be mid-run)."""
        with duckdb.connect(str(self.warehouse)) as con:
            con.execute(sql)

    def job(
        self,
        *,
        destination: str,
        config: Mapping[str, Any],
        mode: str,
        mapping: Sequence[Mapping[str, Any]] = MAPPING,
        safety: Mapping[str, Any] | None = None,
        split: SplitRange | None = None,
    ) -> SyncJob:
        kind = destination_type(destination)
        return SyncJob(
            sync_id=SYNC_ID,
            audience_id=AUDIENCE_ID,
            mode=SyncMode(mode),
            fields=resolve_field_mapping(
                mapping, parent=PARENT, schema=SCHEMA, hashed_fields=HASHED_FIELDS
            ),
            parent=PARENT,
            schema=SCHEMA,
            destination=kind,
            destination_config=kind.parse_config(config),
            safety=SafetyConfig.from_config(dict(safety or {})),
            split=split,
        )

    def run(self, job: SyncJob) -> SyncReport:
        self.runs += 1
        return run_sync(self.store, job, run_id=f"run-{self.runs}", now=datetime.now(UTC))


@pytest.fixture
def world(tmp_path: Path) -> World:
    warehouse = tmp_path / "warehouse.duckdb"
    with duckdb.connect(str(warehouse)) as con:
        con.execute("CREATE SCHEMA analytics")
        con.execute(
            f"""CREATE TABLE analytics.customers AS
            SELECT printf('C%04d', i) AS customer_id,
                   printf('User.%d@Example.com', i) AS email,
                   i AS score,
                   CASE WHEN i % 3 = 0 THEN 'US' ELSE 'DE' END AS country
            FROM range({CUSTOMERS}) t(i)"""
        )
    return World(
        warehouse=warehouse,
        store=ActivationStore(warehouse_url=f"duckdb:///{warehouse}", home=tmp_path / "home"),
        tmp=tmp_path,
    )
