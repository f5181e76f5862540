"""Split groups API, and syncs of one group."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from .conftest import Tenant, seed_body


def test_split_lifecycle_and_sync_of_a_group(
    client: TestClient,
    tenant: Tenant,
    setup: dict,
    tmp_path: Path,
) -> None:
    url = tenant.url(f"/audiences/{setup['audience']}/splits")
    created = client.post(
        url,
        json={"name": "Holdout test", "groups": [
            {"name": "treatment", "percentage": 90}, {"name": "holdout", "percentage": 10}]},
        headers=tenant.headers,
    )  # fmt: skip
    assert created.status_code == 201, created.text
    split = created.json()
    assert [(g["name"], g["percentage"], g["position"]) for g in split["groups"]] == [
        ("treatment", 90.0, 0), ("holdout", 10.0, 1),
    ]  # fmt: skip
    assert client.get(url, headers=tenant.headers).json() == [split]
    holdout = split["groups"][1]["id"]

    sync = client.post(tenant.url("/audience-syncs"),
                       json={**seed_body(setup), "split_group_id": holdout},
                       headers=tenant.headers)  # fmt: skip
    assert sync.status_code == 201 and sync.json()["split_group_id"] == holdout
    blocked = client.delete(f"{url}/{split['id']}", headers=tenant.headers)
    assert blocked.status_code == 409 and "used by syncs" in blocked.json()["error"]
    client.delete(tenant.url(f"/audience-syncs/{sync.json()['id']}"), headers=tenant.headers)
    assert client.delete(f"{url}/{split['id']}", headers=tenant.headers).json() == {
        "status": "deleted"
    }
    assert client.get(f"{url}/{split['id']}", headers=tenant.headers).status_code == 404


def test_bad_splits(client: TestClient, tenant: Tenant, setup: dict) -> None:
    url = tenant.url(f"/audiences/{setup['audience']}/splits")
    cases = [
        ({"name": "s", "groups": [{"name": "a", "percentage": 60},
                                  {"name": "b", "percentage": 30}]},
         "groups: percentages must add up to 100, not 90"),
        ({"name": "s", "groups": [{"name": "a", "percentage": 100}]}, "groups: "),
        ({"name": "s", "groups": [{"name": "a", "percentage": 50},
                                  {"name": "a", "percentage": 50}]},
         "groups[1].name: 'a' is used twice"),
        ({"name": "s", "groups": [{"name": "a", "percentage": 0},
                                  {"name": "b", "percentage": 100}]}, "groups.0.percentage: "),
    ]  # fmt: skip
    for body, error_start in cases:
        response = client.post(url, json=body, headers=tenant.headers)
        assert response.status_code == 400, response.text
        assert response.json()["error"].startswith(error_start), response.json()
    assert client.get(url, headers=tenant.headers).json() == []
    other = tenant.url("/audiences/nope/splits")
    assert client.post(other, json=cases[0][0], headers=tenant.headers).status_code == 404
