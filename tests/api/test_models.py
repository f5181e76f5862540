"""Models API: discovery from the warehouse, validation, preview, delete guards."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from .conftest import Tenant, create_demo_models

MODEL_FIELDS = {
    "id", "workspace_id", "source_id", "name", "description", "sql_query", "columns",
    "entity_type", "primary_key_column", "timestamp_column", "column_config", "model_type",
    "source_schema", "source_table", "selected_columns", "status", "status_error",
    "created_by", "created_at", "updated_at",
}  # fmt: skip


def _models(client: TestClient, tenant: Tenant) -> list[dict]:
    response = client.get(tenant.url("/models"), headers=tenant.headers)
    assert response.status_code == 200
    return response.json()


def test_table_model_discovers_columns(client: TestClient, tenant: Tenant) -> None:
    ids = create_demo_models(client, tenant)
    body = client.get(tenant.url(f"/models/{ids['customers']}"), headers=tenant.headers).json()
    assert set(body) == MODEL_FIELDS
    assert body["model_type"] == "table"
    assert body["status"] == "active" and body["status_error"] == ""
    assert body["created_at"].endswith("Z")
    assert body["columns"] == [
        {"name": "customer_id", "type": "VARCHAR", "nullable": False},
        {"name": "email", "type": "VARCHAR", "nullable": True},
        {"name": "country", "type": "VARCHAR", "nullable": True},
        {"name": "lifetime_value", "type": "DOUBLE", "nullable": True},
        {"name": "signup_at", "type": "TIMESTAMP", "nullable": True},
        {"name": "is_subscribed", "type": "BOOLEAN", "nullable": True},
    ]
    assert [m["name"] for m in _models(client, tenant)] == ["customers", "orders", "events"]


def test_sql_model_and_selected_columns(client: TestClient, tenant: Tenant) -> None:
    response = client.post(
        tenant.url("/models"),
        json={
            "name": "big spenders",
            "sql_query": "SELECT customer_id, lifetime_value * 2 AS doubled "
            "FROM analytics.customers WHERE lifetime_value > 100",
            "primary_key_column": "customer_id",
        },
        headers=tenant.headers,
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["model_type"] == "sql" and body["source_table"] is None
    assert [(c["name"], c["type"]) for c in body["columns"]] == [
        ("customer_id", "VARCHAR"),
        ("doubled", "DOUBLE"),
    ]
    selected = client.post(
        tenant.url("/models"),
        json={
            "name": "slim",
            "source_schema": "analytics",
            "source_table": "customers",
            "selected_columns": ["customer_id", "email"],
            "primary_key_column": "customer_id",
        },
        headers=tenant.headers,
    )
    assert [c["name"] for c in selected.json()["columns"]] == ["customer_id", "email"]


@pytest.mark.parametrize(
    ("body", "status", "error_start"),
    [
        ({"source_table": "customers", "source_schema": "analytics",
          "primary_key_column": "customer_id"}, 400, "name: Field required"),
        ({"name": "m", "source_schema": "analytics", "source_table": "customers",
          "primary_key_column": "id"}, 400, "primary_key_column: unknown column 'id'"),
        ({"name": "m", "source_schema": "analytics", "source_table": "nope",
          "primary_key_column": "id"}, 400, "source_table: no table or view 'analytics.nope'"),
        ({"name": "m", "primary_key_column": "id"}, 400, "source_table: required"),
        ({"name": "m", "model_type": "sql", "primary_key_column": "id"}, 400,
         "sql_query: required"),
        ({"name": "m", "sql_query": "DROP TABLE analytics.customers",
          "primary_key_column": "customer_id"}, 400, "sql_query: must be exactly one SELECT"),
        ({"name": "m", "sql_query": "SELECT 1; SELECT 2", "primary_key_column": "x"}, 400,
         "sql_query: must be exactly one SELECT"),
        ({"name": "m", "sql_query": "SELECT FROM WHERE (", "primary_key_column": "x"}, 400,
         "sql_query: not valid SQL"),
        ({"name": "m", "sql_query": "SELECT * FROM analytics.missing",
          "primary_key_column": "x"}, 400, "sql_query: "),
        ({"name": "m", "source_schema": "analytics", "source_table": "events",
          "entity_type": "event", "primary_key_column": "event_id"}, 400,
         "timestamp_column: required for event models"),
        ({"name": "m", "source_schema": "analytics", "source_table": "events",
          "entity_type": "event", "primary_key_column": "event_id",
          "timestamp_column": "event_type"}, 400,
         "timestamp_column: column 'event_type' is VARCHAR, not a timestamp"),
        ({"name": "m", "source_schema": "analytics", "source_table": "customers",
          "entity_type": "person", "primary_key_column": "customer_id"}, 400, "entity_type: "),
        ({"name": "m", "source_schema": "analytics", "source_table": "customers",
          "selected_columns": ["email"], "primary_key_column": "customer_id"}, 400,
         "primary_key_column: unknown column 'customer_id'"),
        ({"name": "m", "source_schema": "analytics", "source_table": "customers",
          "selected_columns": ["customer_id", "ltv"], "primary_key_column": "customer_id"},
         400, "selected_columns[1]: unknown column 'ltv'"),
    ],
)  # fmt: skip
def test_bad_model_is_rejected_and_nothing_is_written(
    client: TestClient, tenant: Tenant, body: dict, status: int, error_start: str
) -> None:
    response = client.post(tenant.url("/models"), json=body, headers=tenant.headers)
    assert response.status_code == status, response.text
    assert response.json()["error"].startswith(error_start), response.json()
    assert _models(client, tenant) == []


def test_duplicate_name_is_409(client: TestClient, tenant: Tenant) -> None:
    create_demo_models(client, tenant)
    response = client.post(
        tenant.url("/models"),
        json={"name": "orders", "source_schema": "analytics", "source_table": "orders",
              "primary_key_column": "order_id"},
        headers=tenant.headers,
    )  # fmt: skip
    assert response.status_code == 409
    assert "orders" in response.json()["error"]


def test_update_is_partial_and_rediscovers_on_source_change(
    client: TestClient, tenant: Tenant
) -> None:
    ids = create_demo_models(client, tenant)
    url = tenant.url(f"/models/{ids['orders']}")
    updated = client.put(url, json={"description": "all orders"}, headers=tenant.headers)
    assert updated.status_code == 200
    assert updated.json()["description"] == "all orders"
    assert updated.json()["timestamp_column"] == "ordered_at"

    to_sql = client.put(
        url,
        json={"sql_query": "SELECT order_id, amount FROM analytics.orders",
              "timestamp_column": None},
        headers=tenant.headers,
    )  # fmt: skip
    assert to_sql.status_code == 200, to_sql.text
    assert to_sql.json()["model_type"] == "sql"
    assert [c["name"] for c in to_sql.json()["columns"]] == ["order_id", "amount"]

    # A change that breaks the key is refused, and the stored model is untouched.
    broken = client.put(url, json={"primary_key_column": "nope"}, headers=tenant.headers)
    assert broken.status_code == 400
    assert broken.json()["error"].startswith("primary_key_column:")
    assert client.get(url, headers=tenant.headers).json()["primary_key_column"] == "order_id"
    nulled = client.put(url, json={"name": None}, headers=tenant.headers)
    assert nulled.status_code == 400 and nulled.json()["error"] == "name: may not be null"


def test_preview_table_and_query(client: TestClient, tenant: Tenant) -> None:
    table = client.post(
        tenant.url("/models/preview"),
        json={"source_schema": "analytics", "source_table": "customers", "limit": 2},
        headers=tenant.headers,
    )
    assert table.status_code == 200, table.text
    body = table.json()
    assert body["columns"][0] == {"name": "customer_id", "type": "VARCHAR", "nullable": True}
    assert len(body["rows"]) == 2 and body["rows"][0]["customer_id"] == "C1"

    query = client.post(
        tenant.url("/models/preview"),
        json={"sql_query": "SELECT category, count(*) AS n FROM analytics.orders "
                           "GROUP BY 1 ORDER BY 1"},
        headers=tenant.headers,
    )  # fmt: skip
    assert query.json()["rows"] == [
        {"category": "books", "n": 1},
        {"category": "electronics", "n": 2},
    ]
    too_many = client.post(
        tenant.url("/models/preview"),
        json={"sql_query": "SELECT 1", "limit": 1000},
        headers=tenant.headers,
    )
    assert too_many.status_code == 400 and too_many.json()["error"].startswith("limit:")


def test_delete_guard_and_delete(client: TestClient, tenant: Tenant) -> None:
    ids = create_demo_models(client, tenant)
    relationship = client.post(
        tenant.url("/relationships"),
        json={"name": "customer_orders", "from_model_id": ids["customers"],
              "to_model_id": ids["orders"], "from_column": "customer_id",
              "to_column": "customer_id"},
        headers=tenant.headers,
    )  # fmt: skip
    assert relationship.status_code == 201
    blocked = client.delete(tenant.url(f"/models/{ids['orders']}"), headers=tenant.headers)
    assert blocked.status_code == 409
    assert "customer_orders" in blocked.json()["error"]

    deleted = client.delete(tenant.url(f"/models/{ids['events']}"), headers=tenant.headers)
    assert deleted.status_code == 200 and deleted.json() == {"status": "deleted"}
    gone = client.get(tenant.url(f"/models/{ids['events']}"), headers=tenant.headers)
    assert gone.status_code == 404
    assert gone.json() == {"error": f"model {ids['events']!r} not found"}
