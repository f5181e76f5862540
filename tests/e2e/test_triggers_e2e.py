"""Triggers on a real `composable serve`: edits of content never reload Dagster nor make a
trigger wait, and two triggers at once launch one run."""

from __future__ import annotations

import concurrent.futures
import time

import httpx
import pytest

from composable_dagster.names import TAG_OVERRIDE_SAFETY

from ..conftest import DemoEnv, RunningSystem
from .test_syncs_e2e import trigger, wait_for

pytestmark = pytest.mark.e2e

_LOCATION_UPDATED = """
{ workspaceOrError { __typename ... on Workspace {
    locationEntries { name updatedTimestamp } } } }"""


def _location_loaded_at(system: RunningSystem) -> float:
    """When Dagster last (re)loaded the code location."""
    data = system.dagster.query(_LOCATION_UPDATED)["workspaceOrError"]
    [entry] = [e for e in data["locationEntries"] if e["name"] == system.dagster.location]
    return entry["updatedTimestamp"]


def _send(system: RunningSystem, method: str, path: str, body: dict) -> dict:
    response = httpx.request(
        method, f"{system.workspace_url}{path}", json=body, headers=system.headers, timeout=60
    )
    assert response.status_code in (200, 201), response.text
    return response.json()


def _ltv_tree(threshold: float) -> dict:
    return {"type": "and", "children": [
        {"type": "condition", "condition_type": "property", "column": "lifetime_value",
         "operator": "greater_than", "value": threshold}]}  # fmt: skip


def _audience_and_sync(system: RunningSystem, demo_env: DemoEnv, name: str) -> tuple[str, str]:
    out = demo_env.init_output
    audience = _send(system, "POST", "/audiences", {
        "name": name, "parent_model_id": out["model_ids"]["customers"],
        "filter_tree": _ltv_tree(800),
    })  # fmt: skip
    sync = _send(system, "POST", "/audience-syncs", {
        "name": f"{name} sync", "audience_id": audience["id"],
        "destination_id": out["destination_id"], "sync_mode": "mirror",
        "config": {"max_remove_share": 1},
        "field_mapping": [{"source_column": "email", "destination_field": "email"}],
    })  # fmt: skip
    return audience["id"], sync["id"]


def _wait_until_loaded(system: RunningSystem, loaded_before: float) -> float:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        loaded = _location_loaded_at(system)
        if loaded > loaded_before:
            return loaded
        time.sleep(0.5)
    pytest.fail("the code location did not reload")


def _settled_load(system: RunningSystem, *, quiet: float = 8.0) -> float:
    """When the location last loaded, once no reload has happened for `quiet` seconds.

    Each create reloads in the background; one that started after both creates may already
    carry both, and the second create's reload still follows it (it cannot know what the
    code server read). Its end is invisible to a trigger that found its assets loaded.
    """
    deadline = time.monotonic() + 120
    loaded, since = _location_loaded_at(system), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = _location_loaded_at(system)
        if now != loaded:
            loaded, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return loaded
    pytest.fail("the code location kept reloading")


def test_edits_of_content_never_reload_and_the_next_run_uses_them(
    running_system: RunningSystem, demo_env: DemoEnv
) -> None:
    system = running_system
    before = _location_loaded_at(system)
    audience_id, sync_id = _audience_and_sync(system, demo_env, "Edited live")
    _wait_until_loaded(system, before)  # a new audience and sync: the graph changed
    # The trigger waits for the sync's asset if the reloads have not brought it yet.
    first = wait_for(system, sync_id, trigger(system, sync_id).json()["id"])
    assert first["status"] == "completed", first
    loaded = _settled_load(system)  # the reloads for the two creations are done

    # 20 rapid edits of the tree, the mapping and the sync's safety settings.
    for i in range(20):
        if i % 3 == 0:
            _send(system, "PUT", f"/audiences/{audience_id}", {"filter_tree": _ltv_tree(900 + i)})
        elif i % 3 == 1:
            mapping = [
                {"source_column": "email", "destination_field": "email"},
                {"source_column": "country", "destination_field": f"country_{i}"},
            ]
            _send(system, "PUT", f"/audience-syncs/{sync_id}", {"field_mapping": mapping})
        else:
            _send(system, "PUT", f"/audience-syncs/{sync_id}", {"config": {"batch_size": 100 + i}})
    expected = _send(system, "POST", f"/audiences/{audience_id}/estimate?mode=exact", {})
    second = trigger(system, sync_id)
    assert second.status_code == 201, second.text
    run = wait_for(system, sync_id, second.json()["id"])
    assert run["status"] == "completed", run
    # The run used the last tree: those above 918 are members, the rest were removed.
    assert run["rows_removed"] > 0
    audience = _send(system, "GET", f"/audiences/{audience_id}", {})
    assert audience["estimated_size"] == expected["estimated_size"]
    materialization = system.dagster.materializations(
        ["demo", "audiences", "edited_live"], limit=1
    )[0]
    assert materialization["metadata"]["member_count"] == expected["estimated_size"]
    time.sleep(1)  # let any background check finish: none of it may have reloaded
    assert _location_loaded_at(system) == loaded

    # A description is in the graph (the UI shows it): that one edit reloads, once.
    _send(system, "PUT", f"/audiences/{audience_id}", {"description": "now described"})
    _wait_until_loaded(system, loaded)

    # A collapse stops the run at the audience's blocking check; the API says which check
    # and what it saw, not Dagster's "1 blocking asset check failed".
    _send(system, "PUT", f"/audiences/{audience_id}", {"filter_tree": _ltv_tree(4900)})
    blocked = wait_for(system, sync_id, trigger(system, sync_id).json()["id"])
    assert blocked["status"] == "failed", blocked
    assert blocked["error"].startswith(
        "check member_count_drop of demo/audiences/edited_live stopped the run: "
        "the member count fell "
    ), blocked["error"]
    sync = _send(system, "GET", f"/audience-syncs/{sync_id}", {})
    assert (sync["status"], sync["status_error"]) == ("error", blocked["error"])


def test_a_collapse_stops_every_trigger_until_one_overrides_it(
    running_system: RunningSystem, demo_env: DemoEnv
) -> None:
    """The audience's drop check compares with the last membership that passed: the second
    trigger after a collapse is stopped too (it used to pass and remove what the first one
    kept). `{"override_safety": true}` lets one run through, and that one becomes the base."""
    system = running_system
    audience_id, sync_id = _audience_and_sync(system, demo_env, "Collapsed twice")
    first = wait_for(system, sync_id, trigger(system, sync_id).json()["id"])
    assert first["status"] == "completed", first
    delivered = first["rows_added"]

    _send(system, "PUT", f"/audiences/{audience_id}", {"filter_tree": _ltv_tree(4900)})
    for attempt in ("collapse", "the same collapse again"):
        blocked = wait_for(system, sync_id, trigger(system, sync_id).json()["id"])
        assert blocked["status"] == "failed", (attempt, blocked)
        assert blocked["error"].startswith(
            "check member_count_drop of demo/audiences/collapsed_twice stopped the run: "
            "the member count fell "
        ), (attempt, blocked["error"])
        assert blocked["rows_removed"] == 0, (attempt, blocked)
        assert TAG_OVERRIDE_SAFETY not in system.dagster.run(blocked["id"]).tags

    overridden = trigger(system, sync_id, {"override_safety": True})
    assert overridden.status_code == 201, overridden.text
    run = wait_for(system, sync_id, overridden.json()["id"])
    assert run["status"] == "completed", run
    assert system.dagster.run(run["id"]).tags[TAG_OVERRIDE_SAFETY] == "true"
    [latest] = system.dagster.materializations(["demo", "audiences", "collapsed_twice"], limit=1)
    members = latest["metadata"]["member_count"]
    assert run["rows_removed"] == delivered - members > 0  # the mirror applied the collapse

    # The override moved the base: the same membership passes without it, sending nothing.
    after = wait_for(system, sync_id, trigger(system, sync_id, {}).json()["id"])
    assert after["status"] == "completed", after
    assert (after["rows_added"], after["rows_removed"]) == (0, 0), after


def test_two_triggers_at_once_launch_one_run(
    running_system: RunningSystem, demo_env: DemoEnv
) -> None:
    system = running_system
    _audience_id, sync_id = _audience_and_sync(system, demo_env, "Triggered twice")
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        responses = list(pool.map(lambda _: trigger(system, sync_id), range(2)))
    assert sorted(r.status_code for r in responses) == [200, 201], [r.text for r in responses]
    assert responses[0].json()["id"] == responses[1].json()["id"]
    run = wait_for(system, sync_id, responses[0].json()["id"])
    assert run["status"] == "completed", run
    runs = httpx.get(
        f"{system.workspace_url}/audience-syncs/{sync_id}/runs", headers=system.headers, timeout=60
    ).json()
    assert [r["id"] for r in runs] == [run["id"]]
