"""Sampled estimates on a 2M-row parent model, and `auto` on a small one (real DuckDB files)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from composable_dagster.filters.schema import (
    CatalogSchema,
    Column,
    ColumnType,
    EntityType,
    ModelDef,
)
from composable_dagster.warehouse.audiences import Estimate, estimate_members
from composable_dagster.warehouse.connection import Warehouse

from .conftest import Tenant

ROWS = 2_000_000


@pytest.fixture
def warehouse_url(tmp_path: Path) -> str:
    path = tmp_path / "big.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE SCHEMA analytics")
    # Rows in random order, as a warehouse table loaded over time would be: a block
    # sample then sees every plan and value range.
    con.execute(
        f"""CREATE TABLE analytics.customers AS
        SELECT 'C' || i AS customer_id,
               (hash(i) % 1000)::DOUBLE AS lifetime_value,
               ['free', 'basic', 'pro', 'enterprise'][(1 + hash(i * 7) % 4)::BIGINT] AS plan
        FROM range({ROWS}) t(i) ORDER BY hash(i + 1)"""
    )
    con.close()
    return f"duckdb:///{path}"


@pytest.fixture
def customers_id(client: TestClient, tenant: Tenant) -> str:
    response = client.post(
        tenant.url("/models"),
        json={"name": "customers", "source_schema": "analytics", "source_table": "customers",
              "primary_key_column": "customer_id"},
        headers=tenant.headers,
    )  # fmt: skip
    assert response.status_code == 201, response.text
    return response.json()["id"]


def _estimate(client: TestClient, tenant: Tenant, model_id: str, tree: dict, mode: str) -> dict:
    response = client.post(
        tenant.url(f"/models/{model_id}/estimate-filter?mode={mode}"),
        json={"filter_tree": tree},
        headers=tenant.headers,
    )
    assert response.status_code == 200, response.text
    return response.json()


def _ltv_over(value: int) -> dict:
    return {"type": "and", "children": [
        {"type": "condition", "condition_type": "property", "column": "lifetime_value",
         "operator": "greater_than", "value": value}]}  # fmt: skip


@pytest.mark.parametrize("catalog_url", ["sqlite"], indirect=True)
def test_sampled_estimate_is_close_and_says_so(
    client: TestClient, tenant: Tenant, customers_id: str
) -> None:
    tree = _ltv_over(900)  # about 10% of the rows
    exact = _estimate(client, tenant, customers_id, tree, "exact")
    assert exact["sampled"] is False and "confidence_interval" not in exact
    # Each sample is a new random one, and a 95% interval misses one time in twenty by
    # design: judge the intervals over many, not one. Missing in more than 8 of 40 has a
    # chance below 1e-4 for an honest 95% interval (binomial), so this fails only when the
    # interval understates the error.
    trials = [_estimate(client, tenant, customers_id, tree, "auto") for _ in range(40)]
    assert all(auto["sampled"] is True and auto["sample_percent"] == 5.0 for auto in trials)
    covered = sum(low <= exact["estimated_size"] <= high
                  for low, high in (auto["confidence_interval"] for auto in trials))  # fmt: skip
    assert covered >= 32, f"{covered} of 40 intervals held the exact count"
    errors = sorted(abs(a["estimated_size"] - exact["estimated_size"]) for a in trials)
    assert errors[len(errors) // 2] <= 0.03 * exact["estimated_size"]  # the median error
    assert len({a["estimated_size"] for a in trials}) > 1  # a sample, not a count


@pytest.mark.parametrize("catalog_url", ["sqlite"], indirect=True)
def test_small_segment_falls_back_to_exact(
    client: TestClient, tenant: Tenant, customers_id: str
) -> None:
    tree = _ltv_over(998)  # about 0.1%: a 5% sample cannot pin it within ±3%
    auto = _estimate(client, tenant, customers_id, tree, "auto")
    exact = _estimate(client, tenant, customers_id, tree, "exact")
    assert auto == exact and auto["sampled"] is False
    forced = _estimate(client, tenant, customers_id, tree, "sampled")
    assert forced["sampled"] is True
    bad = client.post(
        tenant.url(f"/models/{customers_id}/estimate-filter?mode=guess"),
        json={"filter_tree": tree},
        headers=tenant.headers,
    )
    assert bad.status_code == 400 and bad.json()["error"].startswith("mode:")


def test_auto_counts_a_parent_it_knows_is_small_in_one_query(tmp_path: Path) -> None:
    """The first `auto` estimate of a 10k-row parent samples (learning its size) and then
    counts; later ones count at once: one statement, the same exact answer."""
    path = tmp_path / "small.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE SCHEMA analytics")
        con.execute("""CREATE TABLE analytics.customers AS SELECT 'C' || i AS customer_id,
                       (i % 1000)::DOUBLE AS lifetime_value FROM range(10000) t(i)""")
    model = ModelDef(
        id="customers", name="customers", entity_type=EntityType.PARENT,
        primary_key="customer_id", table="analytics.customers",
        columns={"customer_id": Column("customer_id", ColumnType.TEXT),
                 "lifetime_value": Column("lifetime_value", ColumnType.NUMBER)},
    )  # fmt: skip
    warehouse = Warehouse(f"duckdb:///{path}", read_only=True)
    statements: list[str] = []
    sa.event.listen(warehouse.engine, "before_cursor_execute",
                    lambda *args: statements.append(args[2]))  # fmt: skip
    schema = CatalogSchema(models={"customers": model})

    def estimate():
        statements.clear()
        return estimate_members(warehouse, tree=_ltv_over(899), parent_model_id="customers",
                                schema=schema, now=datetime.now(UTC))  # fmt: skip

    first, second = estimate(), None
    assert len(statements) == 2 and "TABLESAMPLE" in statements[0].upper()
    second = estimate()
    assert len(statements) == 1 and "TABLESAMPLE" not in statements[0].upper()
    assert first == second == Estimate(size=1000)
