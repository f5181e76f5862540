"""Syncs API without Dagster: create/update validation naming the field, nothing written on
error, listing by audience, pause; runs and triggers are covered end to end in tests/e2e."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from .conftest import Tenant, seed_body

SYNC_FIELDS = {
    "id", "workspace_id", "audience_id", "destination_id", "name", "description",
    "field_mapping", "sync_mode", "schedule", "config", "status", "status_error",
    "created_by", "created_at", "updated_at", "last_synced_at", "last_run_id",
    "split_group_id",
}  # fmt: skip


def test_create_get_update_delete(client: TestClient, tenant: Tenant, setup: dict) -> None:
    created = client.post(
        tenant.url("/audience-syncs"), json=seed_body(setup), headers=tenant.headers
    )
    assert created.status_code == 201, created.text
    body = created.json()
    assert set(body) == SYNC_FIELDS
    assert body["status"] == "active" and body["status_error"] == ""
    assert body["last_synced_at"] is None and body["last_run_id"] is None
    assert body["field_mapping"] == [{"source_column": "email", "destination_field": "hashedEmail"}]
    url = tenant.url(f"/audience-syncs/{body['id']}")
    assert client.get(url, headers=tenant.headers).json()["name"] == body["name"]

    paused = client.put(url, json={"status": "paused"}, headers=tenant.headers)
    assert paused.status_code == 200 and paused.json()["status"] == "paused"
    assert paused.json()["schedule"] == "0 */4 * * *"
    manual = client.put(url, json={"schedule": ""}, headers=tenant.headers)
    assert manual.json()["schedule"] is None

    by_audience = client.get(
        tenant.url(f"/audiences/{setup['audience']}/syncs"), headers=tenant.headers
    )
    assert [s["id"] for s in by_audience.json()] == [body["id"]]
    assert client.delete(url, headers=tenant.headers).json() == {"status": "deleted"}
    assert client.get(url, headers=tenant.headers).status_code == 404


@pytest.mark.parametrize(
    ("change", "error_start"),
    [
        ({"audience_id": "nope"}, "audience_id: audience 'nope' not found"),
        ({"destination_id": "nope"}, "destination_id: destination 'nope' not found"),
        ({"sync_mode": "remove"}, "sync_mode: destination type 'file' does not support 'remove'"),
        ({"sync_mode": "replace"}, "sync_mode: "),
        ({"schedule": "every 4 hours"}, "schedule: 'every 4 hours' is not a 5-field cron"),
        ({"schedule": "0 */4 * * * *"}, "schedule: "),
        # croniter accepts these, Dagster cannot build them (the whole code location failed)
        ({"schedule": "0 0 31 2 *"}, "schedule: "),
        ({"schedule": "0 0 15W * *"}, "schedule: "),
        ({"field_mapping": []}, "field_mapping: map at least one field"),
        ({"field_mapping": [{"source_column": "ltv", "destination_field": "x"}]},
         "field_mapping[0].source_column: 'ltv' is neither a column of model customers"),
        ({"field_mapping": [{"source_column": "email"}]},
         "field_mapping.0.destination_field: Field required"),
        ({"field_mapping": [{"source_column": "email", "destination_field": "a"},
                            {"source_column": "country", "destination_field": "a"}]},
         "field_mapping[1].destination_field: 'a' is mapped twice"),
        ({"config": {"max_remove_share": 3}}, "config.max_remove_share: "),
        ({"split_group_id": "nope"}, "split_group_id: split group 'nope' not found"),
        ({"name": None}, "name: "),
    ],
)  # fmt: skip
def test_bad_sync_is_400_and_nothing_written(
    client: TestClient, tenant: Tenant, setup: dict, change: dict, error_start: str
) -> None:
    response = client.post(
        tenant.url("/audience-syncs"), json={**seed_body(setup), **change}, headers=tenant.headers
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"].startswith(error_start), response.json()
    assert client.get(tenant.url("/audience-syncs"), headers=tenant.headers).json() == []


def test_update_is_validated_too(client: TestClient, tenant: Tenant, setup: dict) -> None:
    created = client.post(
        tenant.url("/audience-syncs"), json=seed_body(setup), headers=tenant.headers
    )
    url = tenant.url(f"/audience-syncs/{created.json()['id']}")
    bad = client.put(url, json={"schedule": "61 * * * *"}, headers=tenant.headers)
    assert bad.status_code == 400 and bad.json()["error"].startswith("schedule:")
    bad_status = client.put(url, json={"status": "error"}, headers=tenant.headers)
    assert bad_status.status_code == 400 and bad_status.json()["error"].startswith("status:")
    assert client.get(url, headers=tenant.headers).json()["schedule"] == "0 */4 * * *"


def test_active_sync_blocks_audience_and_destination_deletes(
    client: TestClient, tenant: Tenant, setup: dict
) -> None:
    created = client.post(
        tenant.url("/audience-syncs"), json=seed_body(setup), headers=tenant.headers
    )
    assert (
        client.delete(
            tenant.url(f"/audiences/{setup['audience']}"), headers=tenant.headers
        ).status_code
        == 409
    )
    assert (
        client.delete(
            tenant.url(f"/destinations/{setup['destination']}"), headers=tenant.headers
        ).status_code
        == 409
    )
    client.put(tenant.url(f"/audience-syncs/{created.json()['id']}"), json={"status": "paused"},
               headers=tenant.headers)  # fmt: skip
    assert (
        client.delete(
            tenant.url(f"/destinations/{setup['destination']}"), headers=tenant.headers
        ).status_code
        == 200
    )


def test_trigger_without_dagster_is_503(client: TestClient, tenant: Tenant, setup: dict) -> None:
    created = client.post(
        tenant.url("/audience-syncs"), json=seed_body(setup), headers=tenant.headers
    )
    response = client.post(
        tenant.url(f"/audience-syncs/{created.json()['id']}/trigger"), headers=tenant.headers
    )
    assert response.status_code == 503
    assert response.json()["error"].startswith("dagster: cannot reach")


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"override_safety": "yes"}, "override_safety: Input should be a valid boolean"),
        ({"override_safety": 1}, "override_safety: Input should be a valid boolean"),
        ({"override_safety": None}, "override_safety: Input should be a valid boolean"),
        ({"override": True}, "override: Extra inputs are not permitted"),
        ([True], "body: Input should be a valid dictionary"),
    ],
)
def test_a_trigger_body_is_validated_before_dagster_is_asked(
    client: TestClient, tenant: Tenant, setup: dict, body: object, error: str
) -> None:
    created = client.post(
        tenant.url("/audience-syncs"), json=seed_body(setup), headers=tenant.headers
    )
    url = tenant.url(f"/audience-syncs/{created.json()['id']}/trigger")
    response = client.post(url, json=body, headers=tenant.headers)
    assert response.status_code == 400
    assert response.json()["error"].startswith(error)
    # A body the trigger accepts goes on to Dagster (absent here: 503), with or without it.
    for accepted in ({"override_safety": True}, {"override_safety": False}, {}, None):
        assert client.post(url, json=accepted, headers=tenant.headers).status_code == 503


def test_other_workspace_sees_no_syncs(
    client: TestClient, tenant: Tenant, other_tenant: Tenant, setup: dict
) -> None:
    created = client.post(
        tenant.url("/audience-syncs"), json=seed_body(setup), headers=tenant.headers
    )
    url = other_tenant.url(f"/audience-syncs/{created.json()['id']}")
    assert client.get(url, headers=other_tenant.headers).status_code == 404
    assert client.post(f"{url}/trigger", headers=other_tenant.headers).status_code == 404
    theirs = client.post(other_tenant.url("/audience-syncs"), json=seed_body(setup),
                         headers=other_tenant.headers)  # fmt: skip
    assert theirs.status_code == 400 and theirs.json()["error"].startswith("audience_id:")
