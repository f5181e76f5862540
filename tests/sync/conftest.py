"""Sync engine fixtures: a real DuckDB warehouse and activation store, memberships set by a
score threshold, and jobs for real destinations."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pytest
import sqlalchemy as sa

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
from composable_dagster.spec.sync import (
    MappedField,
    SafetyConfig,
    SplitRange,
    SyncMode,
    resolve_field_mapping,
)
from composable_dagster.sync.engine import SyncJob, SyncReport, run_sync
from composable_dagster.sync.plan import membership_row_hash
from composable_dagster.warehouse.activation import ActivationStore
from tests.scopes import ANYWHERE

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
    (scores are 0..999, one customer each).

    `warehouse` is a DuckDB file, or a PostgreSQL URL (the store is then a schema in it).
    With `store_row_hashes` the materialization stores the row hash of `MAPPING`, as the
    audience asset does for its syncs, so such syncs diff against the membership alone;
    without, every sync hashes the parent rows itself.
    """

    warehouse: Path | str
    store: ActivationStore
    tmp: Path
    runs: int = 0
    store_row_hashes: bool = True

    def members(
        self, low: int, high: int = CUSTOMERS, *, audience_id: str = AUDIENCE_ID
    ) -> set[str]:
        """Materialize the audience as customers with low ≤ score < high."""
        tree = {"type": "and", "children": [
            {"type": "condition", "condition_type": "property", "column": "score",
             "operator": "greater_than_or_equal", "value": low},
            {"type": "condition", "condition_type": "property", "column": "score",
             "operator": "less_than", "value": high}]}  # fmt: skip
        query = compile_members(
            tree,
            parent_model_id="customers",
            schema=SCHEMA,
            now=datetime.now(UTC),
            dialect=self.store.dialect,
            null_keys=True,  # as the audience asset compiles it
        )
        stored = membership_row_hash(self.fields(MAPPING), dialect=self.store.dialect)
        row_hashes = {stored.name: stored.columns} if stored and self.store_row_hashes else {}
        self.store.replace_members(
            audience_id=audience_id, members=query.expression, row_hashes=row_hashes
        )
        return {key(i) for i in range(low, min(high, CUSTOMERS))}

    def execute(self, sql: str) -> None:
        """Change the warehouse (the store must not be mid-run)."""
        if isinstance(self.warehouse, str):
            engine = sa.create_engine(self.warehouse)
            with engine.begin() as conn:
                conn.exec_driver_sql(sql)
            engine.dispose()
            return
        with duckdb.connect(str(self.warehouse)) as con:
            con.execute(sql)

    @staticmethod
    def fields(mapping: Sequence[Mapping[str, Any]]) -> list[MappedField]:
        return resolve_field_mapping(
            mapping, parent=PARENT, schema=SCHEMA, hashed_fields=HASHED_FIELDS
        )

    def job(
        self,
        *,
        destination: str,
        config: Mapping[str, Any],
        mode: str,
        mapping: Sequence[Mapping[str, Any]] = MAPPING,
        safety: Mapping[str, Any] | None = None,
        split: SplitRange | None = None,
        audience_id: str = AUDIENCE_ID,
        destination_id: str = "destination-1",
    ) -> SyncJob:
        kind = destination_type(destination)
        return SyncJob(
            sync_id=SYNC_ID,
            audience_id=audience_id,
            mode=SyncMode(mode),
            fields=self.fields(mapping),
            parent=PARENT,
            schema=SCHEMA,
            destination=kind,
            destination_config=kind.parse_config(config, scope=ANYWHERE),
            destination_id=destination_id,
            safety=SafetyConfig.from_config(dict(safety or {})),
            split=split,
        )

    def run(self, job: SyncJob) -> SyncReport:
        self.runs += 1
        return run_sync(self.store, job, run_id=f"run-{self.runs}", now=datetime.now(UTC))


def duckdb_world(tmp_path: Path) -> World:
    tmp_path.mkdir(parents=True, exist_ok=True)
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


def postgres_world(tmp_path: Path, pg_url: str) -> World:
    """The same customers in a PostgreSQL warehouse; the store is a schema beside them."""
    world = World(
        warehouse=pg_url,
        store=ActivationStore(warehouse_url=pg_url, home=tmp_path / "home"),
        tmp=tmp_path,
    )
    world.execute("CREATE SCHEMA analytics")
    world.execute(
        f"""CREATE TABLE analytics.customers AS
        SELECT 'C' || lpad(i::text, 4, '0') AS customer_id,
               'User.' || i || '@Example.com' AS email,
               i::bigint AS score,
               CASE WHEN mod(i, 3) = 0 THEN 'US' ELSE 'DE' END AS country
        FROM generate_series(0, {CUSTOMERS - 1}) AS t(i)"""
    )
    return world


@pytest.fixture
def target(pg_url: str) -> Iterator[sa.Engine]:
    """The PostgreSQL database the destinations of these tests write to."""
    engine = sa.create_engine(pg_url)
    yield engine
    engine.dispose()


@pytest.fixture
def world(tmp_path: Path) -> World:
    return duckdb_world(tmp_path)


@pytest.fixture(params=["duckdb", "duckdb-hashing-parent-rows", "postgres"])
def any_world(request: pytest.FixtureRequest, tmp_path: Path) -> World:
    """The engine on each store: DuckDB with row hashes stored at materialization (the
    usual case), DuckDB hashing the parent rows at plan time, and PostgreSQL."""
    if request.param == "postgres":
        return postgres_world(tmp_path, request.getfixturevalue("pg_url"))
    world = duckdb_world(tmp_path)
    world.store_row_hashes = request.param == "duckdb"
    return world
