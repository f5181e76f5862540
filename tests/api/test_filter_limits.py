"""Hostile filter trees over HTTP: each answered 400 `{"error": "<path>: ..."}`, never a 5xx,
on a DuckDB and a PostgreSQL warehouse; a number past a DECIMAL column's range is counted.

| customer | balance DECIMAL(18,2) | signup_at  | events |
|----------|-----------------------|------------|--------|
| C1       | 12.50                 | 2024-01-02 | 1      |
| C2       | 9999999999999999.99   | 2024-03-04 | -      |
| C3       | NULL                  | NULL       | -      |
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from composable_dagster.settings import Settings
from composable_dagster.warehouse import Warehouse

from .conftest import Tenant, post_ok

ROWS = (
    ("C1", "12.50", "2024-01-02 10:00:00"),
    ("C2", "9999999999999999.99", "2024-03-04 11:00:00"),
    ("C3", None, None),
)
DDL = {
    "duckdb": (
        "CREATE SCHEMA analytics",
        "CREATE TABLE analytics.customers (customer_id VARCHAR PRIMARY KEY, "
        "balance DECIMAL(18,2), signup_at TIMESTAMP)",
        "CREATE TABLE analytics.events (event_id VARCHAR PRIMARY KEY, customer_id VARCHAR, "
        "occurred_at TIMESTAMP)",
    ),
    "postgresql": (
        "CREATE SCHEMA analytics",
        "CREATE TABLE analytics.customers (customer_id TEXT PRIMARY KEY, "
        "balance NUMERIC(18,2), signup_at TIMESTAMP)",
        "CREATE TABLE analytics.events (event_id TEXT PRIMARY KEY, customer_id TEXT, "
        "occurred_at TIMESTAMP)",
    ),
}
INSERTS = (
    sa.text("INSERT INTO analytics.customers VALUES (:id, CAST(:balance AS DECIMAL(18,2)), "
            "CAST(:signup_at AS TIMESTAMP))"),
    sa.text("INSERT INTO analytics.events VALUES ('E1', 'C1', TIMESTAMP '2024-06-01 09:00:00')"),
)  # fmt: skip


def _load(url: str) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        for statement in DDL[engine.dialect.name]:
            conn.execute(sa.text(statement))
        conn.execute(INSERTS[0], [{"id": i, "balance": b, "signup_at": s} for i, b, s in ROWS])
        conn.execute(INSERTS[1])
    engine.dispose()


@pytest.fixture
def catalog_url(tmp_path: Path) -> str:
    """Only SQLite: the catalog is not what these tests are about."""
    return f"sqlite:///{tmp_path / 'catalog.sqlite'}"


@pytest.fixture(params=["duckdb", "postgres"])
def warehouse_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "duckdb":
        path = tmp_path / "limits.duckdb"
        duckdb.connect(str(path)).close()
        url = f"duckdb:///{path}"
        _load(url)
        yield url
        return
    url = request.getfixturevalue("pg_url")
    _load(url)
    yield url
    # The API's engine is cached per URL: close its pooled connections before the DROP.
    timeout = Settings.model_fields["sql_timeout_seconds"].default
    Warehouse(url, sql_timeout_seconds=timeout).engine.dispose()


@pytest.fixture
def ids(client: TestClient, tenant: Tenant) -> dict[str, str]:
    customers = post_ok(client, tenant, "/models", {
        "name": "customers", "source_schema": "analytics", "source_table": "customers",
        "primary_key_column": "customer_id"})["id"]  # fmt: skip
    events = post_ok(client, tenant, "/models", {
        "name": "events", "source_schema": "analytics", "source_table": "events",
        "entity_type": "event", "primary_key_column": "event_id",
        "timestamp_column": "occurred_at"})["id"]  # fmt: skip
    relationship = post_ok(client, tenant, "/relationships", {
        "name": "customer_events", "from_model_id": customers, "to_model_id": events,
        "from_column": "customer_id", "to_column": "customer_id"})["id"]  # fmt: skip
    return {"customers": customers, "events": relationship}


def P(column: str, operator: str, value: Any, **kw: Any) -> dict:
    return {"type": "condition", "condition_type": "property", "column": column,
            "operator": operator, "value": value, **kw}  # fmt: skip


def EV(relationship: str, window: dict) -> dict:
    return {"type": "condition", "condition_type": "event", "relationship_id": relationship,
            "time_window": window}  # fmt: skip


def _chain(levels: int) -> dict:
    tree = P("balance", "greater_than", 0)
    for _ in range(levels - 1):
        tree = {"type": "and", "children": [tree]}
    return tree


def _post(client: TestClient, tenant: Tenant, path: str, body: dict) -> Any:
    return client.post(tenant.url(path), json=body, headers=tenant.headers)


def _estimate(client: TestClient, tenant: Tenant, ids: dict[str, str], tree: dict) -> Any:
    path = f"/models/{ids['customers']}/estimate-filter?mode=exact"
    return _post(client, tenant, path, {"filter_tree": tree})


def _create(client: TestClient, tenant: Tenant, ids: dict[str, str], tree: dict) -> Any:
    body = {"name": "Hostile", "parent_model_id": ids["customers"], "filter_tree": tree}
    return _post(client, tenant, "/audiences", body)


def _refused(response: Any, error: str) -> None:
    assert response.status_code == 400, response.text
    assert response.json() == {"error": error}


def test_a_150_level_tree_is_400_with_the_path_where_the_limit_is_crossed(
    client: TestClient, tenant: Tenant, ids: dict[str, str]
) -> None:
    error = "filter_tree" + ".children[0]" * 32 + ": tree deeper than 32 levels"
    _refused(_estimate(client, tenant, ids, _chain(150)), error)
    _refused(_create(client, tenant, ids, _chain(150)), error)
    listed = client.get(tenant.url("/audiences"), headers=tenant.headers)
    assert listed.json() == []  # nothing stored
    # Past ~990 JSON levels Python's decoder itself gives up, before any filter code: the
    # request is still a 400 (FastAPI's own "error parsing the body"), not a 500.
    deep = '{"filter_tree": ' + '{"type": "not", "children": [' * 10_000 + "{}" + "]}" * 10_000
    path = f"/models/{ids['customers']}/estimate-filter"
    headers = {**tenant.headers, "Content-Type": "application/json"}
    response = client.post(tenant.url(path), content=deep + "}", headers=headers)
    assert response.status_code == 400 and set(response.json()) == {"error"}, response.text
    # 32 levels is the limit, not an error
    ok = _estimate(client, tenant, ids, _chain(32))
    assert ok.status_code == 200 and ok.json()["estimated_size"] == 2, ok.text


HOSTILE_VALUES = [
    (lambda ids: EV(ids["events"], {"type": "before", "value": 1_000_000, "unit": "days"}),
     "filter_tree.time_window.value: 1000000 days before now is before year 1"),
    (lambda ids: EV(ids["events"], {"type": "within", "value": 30_000, "unit": "months"}),
     "filter_tree.time_window.value: 30000 months before now is before year 1"),
    (lambda ids: EV(ids["events"], {"type": "within", "value": 2_147_483_648, "unit": "days"}),
     "filter_tree.time_window.value: 2147483648 days before now is before year 1"),
    (lambda ids: EV(ids["events"], {"type": "after", "value": "0001-01-01T00:30:00+01:00"}),
     "filter_tree.time_window.value: timestamp '0001-01-01T00:30:00+01:00' is outside years "
     "1-9999 in UTC"),
    (lambda ids: P("signup_at", "equals", "9999-12-31T23:00:00-05:00"),
     "filter_tree.value: timestamp '9999-12-31T23:00:00-05:00' is outside years 1-9999 in UTC"),
    (lambda ids: P("signup_at", "in", ["2024-01-02", "0001-01-01T00:30:00+01:00"]),
     "filter_tree.value[1]: timestamp '0001-01-01T00:30:00+01:00' is outside years 1-9999 in "
     "UTC"),
    (lambda ids: P("signup_at", "between", "2024-01-01", value2="9999-12-31T23:00:00-05:00"),
     "filter_tree.value2: timestamp '9999-12-31T23:00:00-05:00' is outside years 1-9999 in "
     "UTC"),
    (lambda ids: P("balance", "less_than", 10**400),
     "filter_tree.value: number out of range: at most about 1.8e308 in magnitude"),
]  # fmt: skip


@pytest.mark.parametrize(("build", "error"), HOSTILE_VALUES)
def test_values_past_every_range_are_400_naming_the_value(
    client: TestClient, tenant: Tenant, ids: dict[str, str], build: Any, error: str
) -> None:
    tree = build(ids)
    _refused(_estimate(client, tenant, ids, tree), error)
    _refused(_create(client, tenant, ids, tree), error)


@pytest.mark.parametrize(
    ("tree", "expected"),
    [
        (P("balance", "less_than", 1e40), 2),
        (P("balance", "less_than", 10**40), 2),
        (P("balance", "less_than", 10**16), 2),  # one cent past the column's largest value
        (P("balance", "greater_than_or_equal", 10**16), 0),
        (P("balance", "in", [10**40, 12.5]), 1),
        ({"type": "not", "children": [P("balance", "greater_than", -(10**40))]}, 1),
    ],
)
def test_numbers_past_a_decimal_column_are_counted(
    client: TestClient, tenant: Tenant, ids: dict[str, str], tree: dict, expected: int
) -> None:
    response = _estimate(client, tenant, ids, tree)
    assert response.status_code == 200, response.text
    assert response.json()["estimated_size"] == expected
