"""Sampled estimates on a 2M-row parent model (a real DuckDB file)."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest
from fastapi.testclient import TestClient

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
    auto = _estimate(client, tenant, customers_id, tree, "auto")
    assert auto["sampled"] is True and auto["sample_percent"] == 5.0
    assert abs(auto["estimated_size"] - exact["estimated_size"]) <= 0.03 * exact["estimated_size"]
    low, high = auto["confidence_interval"]
    assert low <= exact["estimated_size"] <= high


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
