"""Models API: discovery from the warehouse, validation, preview, delete guards."""

from __future__ import annotations

import base64
import time
from pathlib import Path

import duckdb
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from composable_dagster.errors import WarehouseRejectedError
from composable_dagster.settings import Settings
from composable_dagster.warehouse import Warehouse

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


@pytest.mark.parametrize(
    ("body", "error_start"),
    [
        # The tokenizer's error (an unterminated quote) was a 500.
        ({"sql_query": "SELECT 'abc"}, "sql_query: not valid SQL: Error tokenizing"),
        ({"sql_query": "SELECT * FROM analytics.missing"},
         "sql_query: Catalog Error: Table with name missing does not exist"),
        ({"source_schema": "analytics", "source_table": "missing"},
         "source_table: Catalog Error: Table with name missing does not exist"),
        ({"sql_query": "SELECT 'x'::INTEGER AS n"}, "sql_query: Conversion Error"),
        ({"sql_query": "SELECT 1e400::INTEGER AS n"}, "sql_query: Conversion Error"),
        ({"sql_query": f"SELECT {'9' * 400}::BIGINT AS n"}, "sql_query: Conversion Error"),
        ({"sql_query": "SELECT 2147483647::INTEGER + 1::INTEGER AS n"},
         "sql_query: Out of Range Error"),
    ],
)  # fmt: skip
def test_preview_the_warehouse_refuses_is_400_naming_the_field(
    client: TestClient, tenant: Tenant, body: dict, error_start: str
) -> None:
    """These were 502s: the query is at fault, not the warehouse."""
    response = client.post(tenant.url("/models/preview"), json=body, headers=tenant.headers)
    assert response.status_code == 400, response.text
    assert response.json()["error"].startswith(error_start), response.json()


def test_a_lone_surrogate_is_400(client: TestClient, tenant: Tenant, settings: Settings) -> None:
    # JSON can spell a string that is not Unicode: the body parser refuses it, and should
    # one reach the warehouse (SQL stored by other means), the driver's refusal is a 400.
    response = client.post(
        tenant.url("/models/preview"),
        content='{"sql_query": "SELECT \'\\ud800\' AS s"}',
        headers={**tenant.headers, "Content-Type": "application/json"},
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"].startswith("sql_query: ")
    warehouse = Warehouse(settings.resolved_warehouse_url).for_field("sql_query")
    with pytest.raises(WarehouseRejectedError, match=r"sql_query: .*surrogate"):
        warehouse.fetch("SELECT '\ud800' AS s")


def test_preview_values_are_json_safe(client: TestClient, tenant: Tenant) -> None:
    """Bytes, non-finite floats, decimals, intervals and nested values all reach JSON."""
    sql = (
        r"SELECT '\xFF\x00abc'::BLOB AS blob, 1e400 AS inf, -1e400 AS ninf, "
        "'nan'::DOUBLE AS nan, 1.50::DECIMAL(10, 2) AS dec, "
        "INTERVAL 1 DAY + INTERVAL 2 HOUR AS span, "
        "'5e1f0000-0000-4000-8000-000000000001'::UUID AS id, DATE '2024-01-02' AS day, "
        "TIME '10:30:00' AS clock, TIMESTAMP '2024-01-02 10:30:00' AS at, "
        "[1.5, 'inf'::DOUBLE] AS list, {'b': 'abc'::BLOB, 'n': NULL} AS struct, "
        "MAP {1: 'one'} AS map, 123456789012345678901234567890::HUGEINT AS huge"
    )
    response = client.post(
        tenant.url("/models/preview"), json={"sql_query": sql}, headers=tenant.headers
    )
    assert response.status_code == 200, response.text
    assert response.json()["rows"] == [{
        "blob": "/wBhYmM=", "inf": "Infinity", "ninf": "-Infinity", "nan": "NaN",
        "dec": "1.50", "span": "P1DT7200S", "id": "5e1f0000-0000-4000-8000-000000000001",
        "day": "2024-01-02", "clock": "10:30:00", "at": "2024-01-02T10:30:00",
        "list": [1.5, "Infinity"], "struct": {"b": "YWJj", "n": None}, "map": {"1": "one"},
        "huge": 123456789012345678901234567890,
    }]  # fmt: skip


def test_audience_queries_the_warehouse_refuses_are_400_a_broken_warehouse_502(
    client: TestClient, tenant: Tenant, settings: Settings
) -> None:
    # Columns are described without running the query: the bad cast shows when it runs.
    model = client.post(
        tenant.url("/models"),
        json={"name": "coded", "primary_key_column": "customer_id",
              "sql_query": "SELECT customer_id, CAST(country AS INTEGER) AS code "
                           "FROM analytics.customers"},
        headers=tenant.headers,
    ).json()  # fmt: skip
    tree = {"type": "and", "children": [{"type": "condition", "condition_type": "property",
                                         "column": "code", "operator": "greater_than",
                                         "value": 1}]}  # fmt: skip
    audience = client.post(
        tenant.url("/audiences"),
        json={"name": "coded", "parent_model_id": model["id"], "filter_tree": tree},
        headers=tenant.headers,
    ).json()
    calls = [
        ("POST", f"/audiences/{audience['id']}/estimate", None),
        ("GET", f"/audiences/{audience['id']}/preview", None),
        ("POST", f"/audiences/{audience['id']}/explain", None),
        ("POST", f"/models/{model['id']}/estimate-filter", {"filter_tree": tree}),
    ]
    for method, path, body in calls:
        response = client.request(method, tenant.url(path), json=body, headers=tenant.headers)
        assert response.status_code == 400, (path, response.text)
        assert response.json()["error"].startswith("filter_tree: Conversion Error"), path
    # The warehouse itself failing (not a database file any more) stays a 502.
    Path(sa.make_url(settings.resolved_warehouse_url).database).write_bytes(b"garbage" * 1000)
    for method, path, body in calls:
        response = client.request(method, tenant.url(path), json=body, headers=tenant.headers)
        assert response.status_code == 502, (path, response.text)
        assert response.json()["error"].startswith("warehouse: IO Error"), path


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


UNRENDERABLE = [
    "SELECT DATETIME('x') AS d",
    "SELECT MATCH_AGAINST('x', 'y') AS m",
    "SELECT J_S_O_N_OBJECT('x') AS j",
    "SELECT PARAMETERIZED_AGG(1, 2, 3) AS p",
    "SELECT COMBINED_PARAMETERIZED_AGG(1, 2, 3) AS c",
]


@pytest.mark.parametrize("sql", UNRENDERABLE)
def test_sql_sqlglot_parses_but_cannot_render_is_400(
    client: TestClient, tenant: Tenant, sql: str
) -> None:
    """These parse, and sqlglot's generator then raised (a 500) wherever the SQL was used."""
    ids = create_demo_models(client, tenant)
    for method, path, body in [
        ("POST", "/models/preview", {"sql_query": sql}),
        ("POST", "/models", {"name": "m", "primary_key_column": "d", "sql_query": sql}),
        ("PUT", f"/models/{ids['customers']}", {"sql_query": sql}),
    ]:
        response = client.request(method, tenant.url(path), json=body, headers=tenant.headers)
        assert response.status_code == 400, (method, path, response.text)
        assert response.json()["error"].startswith("sql_query: cannot be run on duckdb: "), path
    stored = client.get(tenant.url(f"/models/{ids['customers']}"), headers=tenant.headers).json()
    assert stored["model_type"] == "table"
    preview = client.post(
        tenant.url("/models/preview"),
        json={"sql_query": "SELECT CAST('2024-01-02' AS DATE) AS d"},
        headers=tenant.headers,
    )
    assert preview.json()["rows"] == [{"d": "2024-01-02"}]


def _preview(client: TestClient, tenant: Tenant, body: dict) -> dict:
    response = client.post(tenant.url("/models/preview"), json=body, headers=tenant.headers)
    assert response.status_code == 200, response.text
    return response.json()


def test_preview_values_are_cut_at_the_documented_limits(
    client: TestClient, tenant: Tenant
) -> None:
    """A 100 MB text previewed whole; now text, bytes, lists and maps are cut (marked with
    "…[truncated]"), nested values too."""
    row = _preview(client, tenant, {"sql_query": (
        "SELECT repeat('x', 20000) AS text, repeat('ab', 6000)::BLOB AS bytes, "
        "range(5000) AS list, MAP(range(1500), range(1500)) AS map, "
        "[repeat('y', 20000)] AS nested, 'short' AS small, [1, 2] AS pair"
    )})["rows"][0]  # fmt: skip
    assert row["text"] == "x" * 10_000 + "…[truncated]"
    assert row["bytes"] == base64.b64encode(b"ab" * 3750).decode() + "…[truncated]"
    assert row["list"] == [*range(1000), "…[truncated]"]
    assert len(row["map"]) == 1001 and row["map"]["999"] == 999 and "…[truncated]" in row["map"]
    assert row["nested"] == ["y" * 10_000 + "…[truncated]"]
    assert (row["small"], row["pair"]) == ("short", [1, 2])


def test_a_huge_value_is_cut_before_python_converts_it(client: TestClient, tenant: Tenant) -> None:
    """Turning a 10M-item list into Python objects took longer than the query's timeout and
    nothing interrupted it: the preview now cuts it in SQL."""
    started = time.monotonic()
    body = _preview(client, tenant, {"sql_query": "SELECT list(range) AS l FROM range(10000000)"})
    assert body["rows"] == [{"l": [*range(1000), "…[truncated]"]}]
    assert body["columns"] == [{"name": "l", "type": "BIGINT[]", "nullable": True}]
    assert time.monotonic() - started < 30


def test_deeply_nested_values_become_text_below_32_levels(
    client: TestClient, tenant: Tenant, warehouse_url: str
) -> None:
    """A 300-level nested list previewed as a 500 (the JSON encoders recurse)."""
    with duckdb.connect(warehouse_url.removeprefix("duckdb:///")) as con:
        con.execute(
            "CREATE TABLE analytics.deep AS SELECT " + "[" * 300 + "1" + "]" * 300 + " AS v"
        )
    body = _preview(client, tenant, {"source_schema": "analytics", "source_table": "deep"})
    value = body["rows"][0]["v"]
    for _level in range(32):
        assert isinstance(value, list) and len(value) == 1
        value = value[0]
    assert isinstance(value, str) and value.startswith("[[[[") and len(value) < 1000
