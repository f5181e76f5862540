"""API fixtures: a real DuckDB warehouse file, a real catalog (SQLite file and PostgreSQL),
and the FastAPI app served in-process through its ASGI interface."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pytest
from fastapi.testclient import TestClient

from composable_dagster.api.app import create_app
from composable_dagster.catalog import workspaces
from composable_dagster.catalog.db import catalog_session
from composable_dagster.settings import Settings

from ..conftest import free_port

WAREHOUSE_SQL = """
CREATE SCHEMA analytics;
CREATE TABLE analytics.customers (
    customer_id VARCHAR PRIMARY KEY, email VARCHAR, country VARCHAR,
    lifetime_value DOUBLE, signup_at TIMESTAMP, is_subscribed BOOLEAN
);
INSERT INTO analytics.customers VALUES
    ('C1', 'alice@example.com', 'US', 1500.0, TIMESTAMP '2024-01-02 10:00:00', true),
    ('C2', 'bob@example.com', 'GB', 200.0, TIMESTAMP '2024-03-04 11:00:00', false),
    ('C3', NULL, 'US', NULL, TIMESTAMP '2024-05-06 12:00:00', NULL);
CREATE TABLE analytics.orders (
    order_id VARCHAR PRIMARY KEY, customer_id VARCHAR, category VARCHAR,
    amount DOUBLE, ordered_at TIMESTAMP
);
INSERT INTO analytics.orders VALUES
    ('O1', 'C1', 'electronics', 900.0, TIMESTAMP '2024-06-01 09:00:00'),
    ('O2', 'C1', 'books', 20.0, TIMESTAMP '2024-06-02 09:00:00'),
    ('O3', 'C2', 'electronics', 150.0, TIMESTAMP '2024-06-03 09:00:00');
CREATE TABLE analytics.events (
    event_id VARCHAR PRIMARY KEY, customer_id VARCHAR, event_type VARCHAR,
    occurred_at TIMESTAMP
);
INSERT INTO analytics.events VALUES
    ('E1', 'C1', 'purchase', TIMESTAMP '2024-06-01 09:00:00'),
    ('E2', 'C2', 'page_view', TIMESTAMP '2024-06-05 09:00:00');
"""


@pytest.fixture
def warehouse_url(tmp_path: Path) -> str:
    path = tmp_path / "warehouse.duckdb"
    con = duckdb.connect(str(path))
    con.execute(WAREHOUSE_SQL)
    con.close()
    return f"duckdb:///{path}"


@pytest.fixture(params=["sqlite", "postgres"])
def catalog_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'catalog.sqlite'}"
    return request.getfixturevalue("pg_url")


@pytest.fixture
def settings(tmp_path: Path, catalog_url: str, warehouse_url: str) -> Settings:
    # No Dagster in these tests: a free port, so reloads fail fast (and are only logged).
    return Settings(
        home=tmp_path / "home",
        catalog_url=catalog_url,
        warehouse_url=warehouse_url,
        dagster_url=f"http://127.0.0.1:{free_port()}/graphql",
        # Tests change the warehouse between requests; a held read-only instance would
        # lock them out (the documented trade-off of the hold).
        warehouse_hold_seconds=0,
    )


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
        yield test_client


@dataclass(frozen=True)
class Tenant:
    """A workspace and credentials for it; `url(...)` builds its workspace-scoped paths."""

    workspace_id: str
    api_key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}", "X-Workspace-ID": self.workspace_id}

    def url(self, path: str = "") -> str:
        return f"/api/v1/workspaces/{self.workspace_id}{path}"


def make_tenant(settings: Settings, name: str) -> Tenant:
    with catalog_session(settings.resolved_catalog_url) as session:
        workspace = workspaces.create_workspace(session, name=name)
        issued = workspaces.issue_api_key(
            session,
            workspace_id=workspace.id,
            spec=workspaces.ApiKeyCreate(name="test"),
            created_by=None,
        )
        return Tenant(workspace_id=workspace.id, api_key=issued.raw_key)


@pytest.fixture
def tenant(client: TestClient, settings: Settings) -> Tenant:
    return make_tenant(settings, "Acme")


@pytest.fixture
def other_tenant(client: TestClient, settings: Settings) -> Tenant:
    return make_tenant(settings, "Globex")


def create_demo_models(client: TestClient, tenant: Tenant) -> dict[str, str]:
    """customers (parent), orders (related), events (event); returns their ids by name."""
    specs = [
        {"name": "customers", "source_schema": "analytics", "source_table": "customers",
         "entity_type": "parent", "primary_key_column": "customer_id"},
        {"name": "orders", "source_schema": "analytics", "source_table": "orders",
         "entity_type": "related", "primary_key_column": "order_id",
         "timestamp_column": "ordered_at"},
        {"name": "events", "source_schema": "analytics", "source_table": "events",
         "entity_type": "event", "primary_key_column": "event_id",
         "timestamp_column": "occurred_at"},
    ]  # fmt: skip
    ids = {}
    for spec in specs:
        response = client.post(tenant.url("/models"), json=spec, headers=tenant.headers)
        assert response.status_code == 201, response.text
        ids[spec["name"]] = response.json()["id"]
    return ids


@pytest.fixture
def setup(client: TestClient, tenant: Tenant, tmp_path: Path) -> dict[str, str]:
    ids = create_demo_models(client, tenant)
    audience = client.post(
        tenant.url("/audiences"),
        json={"name": "High-Value Customers", "parent_model_id": ids["customers"],
              "filter_tree": {"type": "and", "children": [
                  {"type": "condition", "condition_type": "property",
                   "column": "lifetime_value", "operator": "greater_than", "value": 1000}]}},
        headers=tenant.headers,
    )  # fmt: skip
    assert audience.status_code == 201, audience.text
    destination = client.post(
        tenant.url("/destinations"),
        json={"name": "Exports", "destination_type": "file", "config": {"path": "exports"}},
        headers=tenant.headers,
    )
    return {**ids, "audience": audience.json()["id"], "destination": destination.json()["id"]}


def seed_body(setup: dict[str, str]) -> dict:
    """The seed page's create example, ids replaced (mirror to a file destination)."""
    return {
        "name": "High-Value Customers to Google Ads",
        "audience_id": setup["audience"],
        "destination_id": setup["destination"],
        "field_mapping": [{"source_column": "email", "destination_field": "hashedEmail"}],
        "sync_mode": "mirror",
        "schedule": "0 */4 * * *",
    }


def post_ok(client: TestClient, tenant: Tenant, path: str, body: dict) -> dict:
    """POST to a workspace path; the created (or returned) object, after asserting success."""
    response = client.post(tenant.url(path), json=body, headers=tenant.headers)
    assert response.status_code in (200, 201), response.text
    return response.json()


@pytest.fixture
def catalog(client: TestClient, tenant: Tenant) -> dict[str, str]:
    """Models of the warehouse's analytics.customers, orders and events, their
    relationships and an order-count trait, created over HTTP; their ids by name."""
    ids: dict[str, str] = {}
    for body in (
        {"name": "customers", "source_schema": "analytics", "source_table": "customers",
         "primary_key_column": "customer_id"},
        {"name": "orders", "source_schema": "analytics", "source_table": "orders",
         "entity_type": "related", "primary_key_column": "order_id"},
        {"name": "events", "source_schema": "analytics", "source_table": "events",
         "entity_type": "event", "primary_key_column": "event_id",
         "timestamp_column": "occurred_at"},
    ):  # fmt: skip
        ids[body["name"]] = post_ok(client, tenant, "/models", body)["id"]
    for name, target in (("customer_orders", "orders"), ("customer_events", "events")):
        ids[name] = post_ok(client, tenant, "/relationships", {
            "name": name, "from_model_id": ids["customers"], "to_model_id": ids[target],
            "from_column": "customer_id", "to_column": "customer_id",
        })["id"]  # fmt: skip
    ids["order_count"] = post_ok(client, tenant, "/traits", {
        "name": "Order count", "slug": "order_count", "parent_model_id": ids["customers"],
        "trait_type": "aggregation",
        "config": {"relationship_id": ids["customer_orders"], "function": "count"},
    })["id"]  # fmt: skip
    return ids


def stored_config(settings: Settings, destination_id: str) -> Any:
    """A destination's whole stored config (secrets decrypted), as a run would see it."""
    from composable_dagster.catalog.destinations import destination_config
    from composable_dagster.catalog.secret_box import secret_box_for
    from composable_dagster.catalog.tables import Destination, Workspace
    from composable_dagster.destinations import DestinationScope

    with catalog_session(settings.resolved_catalog_url) as session:
        row = session.get(Destination, destination_id)
        slug = session.get(Workspace, row.workspace_id).slug
        scope = DestinationScope.for_workspace(settings, slug)
        return destination_config(row, scope=scope, box=secret_box_for(settings))[1]
