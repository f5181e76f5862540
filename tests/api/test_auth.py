"""Auth: Bearer API key + X-Workspace-ID, 401 / 403 / 404, and keys stored hashed."""

from __future__ import annotations

import sqlalchemy as sa
from fastapi.testclient import TestClient

from composable_dagster.settings import Settings

from .conftest import Tenant, create_demo_models


def test_missing_authorization_is_401(client: TestClient, tenant: Tenant) -> None:
    response = client.get(tenant.url("/models"), headers={"X-Workspace-ID": tenant.workspace_id})
    assert response.status_code == 401
    assert response.json() == {
        "error": "Authorization: missing; send 'Authorization: Bearer <api key>'"
    }


def test_wrong_scheme_and_unknown_key_are_401(client: TestClient, tenant: Tenant) -> None:
    basic = {"Authorization": f"Basic {tenant.api_key}", "X-Workspace-ID": tenant.workspace_id}
    assert client.get(tenant.url("/models"), headers=basic).status_code == 401
    forged = {"Authorization": "Bearer cdk_deadbeef_nope", "X-Workspace-ID": tenant.workspace_id}
    response = client.get(tenant.url("/models"), headers=forged)
    assert response.status_code == 401
    assert "invalid or revoked" in response.json()["error"]


def test_missing_workspace_header_is_400(client: TestClient, tenant: Tenant) -> None:
    headers = {"Authorization": f"Bearer {tenant.api_key}"}
    response = client.get(tenant.url("/models"), headers=headers)
    assert response.status_code == 400
    assert response.json()["error"].startswith("X-Workspace-ID:")


def test_header_must_match_path(client: TestClient, tenant: Tenant, other_tenant: Tenant) -> None:
    headers = {**tenant.headers, "X-Workspace-ID": other_tenant.workspace_id}
    response = client.get(tenant.url("/models"), headers=headers)
    assert response.status_code == 403


def test_key_of_another_workspace_is_403(
    client: TestClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    # Other tenant's key, aimed at this tenant's workspace (header consistent with the path).
    headers = {
        "Authorization": f"Bearer {other_tenant.api_key}",
        "X-Workspace-ID": tenant.workspace_id,
    }
    for path in ("/models", "/relationships", "/traits", "/destinations", "/api-keys"):
        response = client.get(tenant.url(path), headers=headers)
        assert response.status_code == 403, path
        assert "error" in response.json()


def test_another_workspaces_resource_is_404(
    client: TestClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    model_ids = create_demo_models(client, tenant)
    customers = model_ids["customers"]
    # Through its own workspace path, the other tenant cannot see, change or delete it.
    url = other_tenant.url(f"/models/{customers}")
    assert client.get(url, headers=other_tenant.headers).status_code == 404
    update = client.put(url, json={"description": "hijacked"}, headers=other_tenant.headers)
    assert update.status_code == 404
    assert client.delete(url, headers=other_tenant.headers).status_code == 404
    own = client.get(tenant.url(f"/models/{customers}"), headers=tenant.headers).json()
    assert own["description"] == ""
    listed = client.get(other_tenant.url("/models"), headers=other_tenant.headers).json()
    assert listed == []


def test_list_workspaces_shows_only_the_keys_workspace(
    client: TestClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    response = client.get(
        "/api/v1/workspaces", headers={"Authorization": f"Bearer {tenant.api_key}"}
    )
    assert response.status_code == 200
    assert [w["id"] for w in response.json()] == [tenant.workspace_id]
    assert client.get("/api/v1/workspaces").status_code == 401


def test_api_key_lifecycle(client: TestClient, tenant: Tenant, settings: Settings) -> None:
    created = client.post(tenant.url("/api-keys"), json={"name": "ci"}, headers=tenant.headers)
    assert created.status_code == 201
    body = created.json()
    raw_key = body["key"]
    assert raw_key.startswith(body["key_prefix"] + "_")
    assert body["created_by"] is not None
    assert set(body) == {
        "id", "workspace_id", "name", "key_prefix", "status", "created_by", "created_at",
        "updated_at", "key",
    }  # fmt: skip

    # The new key authenticates; listings never show a raw key again.
    new_headers = {"Authorization": f"Bearer {raw_key}", "X-Workspace-ID": tenant.workspace_id}
    listed = client.get(tenant.url("/api-keys"), headers=new_headers)
    assert listed.status_code == 200
    assert {k["name"] for k in listed.json()} == {"test", "ci"}
    assert all("key" not in k for k in listed.json())

    # Only a hash is stored.
    engine = sa.create_engine(settings.resolved_catalog_url)
    with engine.connect() as conn:
        stored = [r[0] for r in conn.execute(sa.text("SELECT key_hash FROM api_keys"))]
    engine.dispose()
    assert raw_key not in stored and all(len(h) == 64 for h in stored)

    deleted = client.delete(tenant.url(f"/api-keys/{body['id']}"), headers=tenant.headers)
    assert deleted.json() == {"status": "deleted"}
    assert client.get(tenant.url("/models"), headers=new_headers).status_code == 401
