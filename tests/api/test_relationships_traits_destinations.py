"""Relationships, traits and destinations: CRUD, validation naming the field, guards."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from composable_dagster.settings import Settings

from .conftest import Tenant, create_demo_models, stored_config


@pytest.fixture
def ids(client: TestClient, tenant: Tenant) -> dict[str, str]:
    return create_demo_models(client, tenant)


def _relationship(client: TestClient, tenant: Tenant, ids: dict[str, str], **over) -> dict:
    body = {
        "name": "customer_orders",
        "from_model_id": ids["customers"],
        "to_model_id": ids["orders"],
        "from_column": "customer_id",
        "to_column": "customer_id",
        "cardinality": "one_to_many",
        **over,
    }
    response = client.post(tenant.url("/relationships"), json=body, headers=tenant.headers)
    return {"status": response.status_code, **response.json()}


def test_relationship_crud(client: TestClient, tenant: Tenant, ids: dict[str, str]) -> None:
    created = _relationship(client, tenant, ids)
    assert created["status"] == 201
    url = tenant.url(f"/relationships/{created['id']}")
    assert client.get(url, headers=tenant.headers).json()["to_column"] == "customer_id"
    renamed = client.put(url, json={"name": "orders of customer"}, headers=tenant.headers)
    assert renamed.status_code == 200 and renamed.json()["name"] == "orders of customer"
    listed = client.get(tenant.url("/relationships"), headers=tenant.headers).json()
    assert [r["id"] for r in listed] == [created["id"]]
    assert client.delete(url, headers=tenant.headers).json() == {"status": "deleted"}
    assert client.get(url, headers=tenant.headers).status_code == 404


@pytest.mark.parametrize(
    ("override", "error_start"),
    [
        ({"to_column": "client_id"}, "to_column: unknown column 'client_id' on model orders"),
        ({"from_model_id": "00000000-0000-0000-0000-000000000000"}, "from_model_id: model"),
        ({"cardinality": "some_to_some"}, "cardinality: "),
        ({"cardinality": "many_to_many"}, "through_model_id: required"),
        ({"through_model_id": "x"}, "through_model_id: only many_to_many"),
    ],
)
def test_bad_relationship(
    client: TestClient, tenant: Tenant, ids: dict[str, str], override: dict, error_start: str
) -> None:
    created = _relationship(client, tenant, ids, **override)
    assert created["status"] == 400
    assert created["error"].startswith(error_start), created["error"]
    assert client.get(tenant.url("/relationships"), headers=tenant.headers).json() == []


def test_relationship_to_another_workspaces_model(
    client: TestClient, tenant: Tenant, other_tenant: Tenant, ids: dict[str, str]
) -> None:
    theirs = create_demo_models(client, other_tenant)
    created = _relationship(client, tenant, ids, to_model_id=theirs["orders"])
    assert created["status"] == 400 and created["error"].startswith("to_model_id: model")


def test_trait_crud_and_guards(client: TestClient, tenant: Tenant, ids: dict[str, str]) -> None:
    rel = _relationship(client, tenant, ids)
    count = client.post(
        tenant.url("/traits"),
        json={"name": "Order count", "parent_model_id": ids["customers"],
              "trait_type": "aggregation",
              "config": {"relationship_id": rel["id"], "function": "count"}},
        headers=tenant.headers,
    )  # fmt: skip
    assert count.status_code == 201, count.text
    assert count.json()["slug"] == "order_count" and count.json()["result_type"] == "number"
    spend = client.post(
        tenant.url("/traits"),
        json={"name": "Spend", "slug": "spend", "parent_model_id": ids["customers"],
              "trait_type": "aggregation", "result_type": "number",
              "config": {"relationship_id": rel["id"], "function": "sum", "column": "amount"}},
        headers=tenant.headers,
    )  # fmt: skip
    assert spend.status_code == 201, spend.text
    formula = client.post(
        tenant.url("/traits"),
        json={"name": "AOV", "parent_model_id": ids["customers"], "trait_type": "formula",
              "result_type": "number", "config": {"expression": "spend / order_count"}},
        headers=tenant.headers,
    )  # fmt: skip
    assert formula.status_code == 201, formula.text

    by_model = client.get(tenant.url(f"/models/{ids['customers']}/traits"), headers=tenant.headers)
    assert [t["slug"] for t in by_model.json()] == ["order_count", "spend", "aov"]

    # A trait used by a formula, or a relationship used by traits, cannot be deleted.
    blocked = client.delete(tenant.url(f"/traits/{spend.json()['id']}"), headers=tenant.headers)
    assert blocked.status_code == 409 and "AOV" in blocked.json()["error"]
    rel_blocked = client.delete(tenant.url(f"/relationships/{rel['id']}"), headers=tenant.headers)
    assert rel_blocked.status_code == 409

    changed = client.put(
        tenant.url(f"/traits/{count.json()['id']}"),
        json={"config": {"relationship_id": rel["id"], "function": "count_distinct",
                         "column": "category"}},
        headers=tenant.headers,
    )  # fmt: skip
    assert changed.status_code == 200 and changed.json()["config"]["function"] == "count_distinct"


@pytest.mark.parametrize(
    ("body", "error_start"),
    [
        ({"trait_type": "aggregation", "config": {"relationship_id": "nope", "function": "count"}},
         "config.relationship_id: "),
        ({"trait_type": "aggregation",
          "config": {"relationship_id": "{rel}", "function": "sum", "column": "price"}},
         "config.column: "),
        ({"trait_type": "aggregation",
          "config": {"relationship_id": "{rel}", "function": "median"}}, "config.function: "),
        ({"trait_type": "formula", "result_type": "number",
          "config": {"expression": "missing_trait * 2"}}, "config.expression: "),
        ({"trait_type": "sql", "result_type": "number",
          "config": {"sql": "DELETE FROM analytics.customers"}}, "config.sql: "),
        ({"trait_type": "vibes", "config": {}}, "trait_type: "),
        # A misspelled key would otherwise be ignored: the filter left out of the count.
        ({"trait_type": "aggregation", "config": {
            "relationship_id": "{rel}", "function": "count",
            "filters": {"type": "and", "children": []}}},
         "config.filters: unknown key for trait type aggregation; expected column, filter, "
         "function, relationship_id"),
        ({"trait_type": "formula", "result_type": "number",
          "config": {"expression": "1", "sql": "SELECT 1"}}, "config.sql: unknown key"),
    ],
)  # fmt: skip
def test_bad_trait(
    client: TestClient, tenant: Tenant, ids: dict[str, str], body: dict, error_start: str
) -> None:
    rel = _relationship(client, tenant, ids)
    if "config" in body and body["config"].get("relationship_id") == "{rel}":
        body = {**body, "config": {**body["config"], "relationship_id": rel["id"]}}
    response = client.post(
        tenant.url("/traits"),
        json={"name": "t", "parent_model_id": ids["customers"], **body},
        headers=tenant.headers,
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"].startswith(error_start), response.json()
    assert client.get(tenant.url("/traits"), headers=tenant.headers).json() == []


def test_file_destination(client: TestClient, tenant: Tenant, settings: Settings) -> None:
    created = client.post(
        tenant.url("/destinations"),
        json={"name": "Exports", "destination_type": "file",
              "config": {"path": "exports", "format": "jsonl", "compression": "gzip"}},
        headers=tenant.headers,
    )  # fmt: skip
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["status"] == "connected" and body["status_error"] == ""
    assert body["config"]["file_prefix"] == ""  # defaults are stored explicitly
    # A relative path lives in the workspace's export directory, and is shown resolved.
    export = Path(body["config"]["path"])
    assert export.is_dir() and export.name == "exports"
    assert export.parent.parent == settings.resolved_export_root
    url = tenant.url(f"/destinations/{body['id']}")

    fields = client.get(f"{url}/fields", headers=tenant.headers).json()
    assert fields["supported_sync_modes"] == ["add", "mirror", "upsert"]

    # A path that cannot be written: the update is stored, but the status says why.
    (export.parent / "a-file").write_text("not a directory")
    broken = client.put(url, json={"config": {"path": "a-file/sub"}}, headers=tenant.headers)
    assert broken.status_code == 200
    assert broken.json()["status"] == "error" and "cannot write" in broken.json()["status_error"]
    retest = client.post(f"{url}/test", headers=tenant.headers).json()
    assert retest["success"] is False

    ok = client.post(
        tenant.url("/destinations/test"),
        json={"destination_type": "file", "config": {"path": "exports"}},
        headers=tenant.headers,
    )
    assert ok.json()["success"] is True
    assert client.delete(url, headers=tenant.headers).json() == {"status": "deleted"}


@pytest.mark.parametrize(
    ("body", "error_start"),
    [
        ({"destination_type": "fax", "config": {}}, "destination_type: unknown destination type"),
        ({"destination_type": "file", "config": {}}, "config.path: Field required"),
        ({"destination_type": "file", "config": {"path": "x", "format": "xml"}},
         "config.format: "),
        ({"destination_type": "file",
          "config": {"path": "x", "format": "parquet", "compression": "gzip"}},
         "config: "),
        ({"destination_type": "file", "config": {"path": "x", "bucket": "b"}},
         "config.bucket: Extra inputs"),
        ({"destination_type": "file"}, "config: Field required"),
    ],
)  # fmt: skip
def test_bad_destination(client: TestClient, tenant: Tenant, body: dict, error_start: str) -> None:
    response = client.post(
        tenant.url("/destinations"), json={"name": "d", **body}, headers=tenant.headers
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"].startswith(error_start), response.json()
    assert client.get(tenant.url("/destinations"), headers=tenant.headers).json() == []


def test_malformed_bodies_are_400_naming_the_problem(client: TestClient, tenant: Tenant) -> None:
    raw = client.post(
        tenant.url("/models"),
        content=b"{not json",
        headers={**tenant.headers, "Content-Type": "application/json"},
    )
    assert raw.status_code == 400 and raw.json()["error"].startswith("body: invalid JSON")
    wrong_type = client.post(
        tenant.url("/destinations"),
        json={"name": ["x"], "destination_type": "file", "config": {"path": "x"}},
        headers=tenant.headers,
    )
    assert wrong_type.status_code == 400 and wrong_type.json()["error"].startswith("name: ")
    unknown = client.get(tenant.url("/nothing-here"), headers=tenant.headers)
    assert unknown.status_code == 404 and "error" in unknown.json()


def test_destination_secrets_are_write_only(
    client: TestClient, tenant: Tenant, pg_server_url
) -> None:
    url = pg_server_url.render_as_string(hide_password=False)
    created = client.post(
        tenant.url("/destinations"),
        json={"name": "crm", "destination_type": "webhook",
              "config": {"url": "http://127.0.0.1:9/hook", "signing_secret": "s3cret",
                         "headers": {"Authorization": "Bearer top-secret"}}},
        headers=tenant.headers,
    )  # fmt: skip
    assert created.status_code == 201, created.text
    shown = created.json()["config"]
    assert shown["headers"] == {"Authorization": "********"}
    assert shown["signing_secret"] == "********"
    assert "top-secret" not in created.text and "s3cret" not in created.text

    # A client PUTs back what it read, changing one field: the secrets survive.
    dest_url = tenant.url(f"/destinations/{created.json()['id']}")
    updated = client.put(dest_url, json={"config": {**shown, "batch_size": 100}},
                         headers=tenant.headers)  # fmt: skip
    assert updated.status_code == 200, updated.text
    stored = stored_config(client.app.state.settings, created.json()["id"])
    assert stored.signing_secret == "s3cret" and stored.batch_size == 100
    assert stored.headers == {"Authorization": "Bearer top-secret"}

    pg = client.post(
        tenant.url("/destinations"),
        json={"name": "warehouse copy", "destination_type": "postgres",
              "config": {"url": url, "table": "public.members"}},
        headers=tenant.headers,
    )  # fmt: skip
    assert pg.status_code == 201, pg.text
    assert "composable_test:********@" in pg.json()["config"]["url"]
    assert pg.json()["status"] == "connected"
