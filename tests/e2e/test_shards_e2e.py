"""The catalog split into code locations on a real `composable serve`
(COMPOSABLE_CODE_LOCATIONS=2): each sync runs in the location that has it, a create
reloads only its own location, and a reference that joins two audiences brings them into
one location, whose runs then work."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from ..conftest import DemoEnv, RunningSystem, make_demo_env, serving_system
from ..webhook_receiver import Receiver
from .test_run_workers_e2e import _hook_sync
from .test_syncs_e2e import trigger, wait_for

pytestmark = pytest.mark.e2e

LOCATIONS = ("composable_0", "composable_1")
_LOCATIONS_UPDATED = """
{ workspaceOrError { __typename ... on Workspace {
    locationEntries { name updatedTimestamp } } } }"""


@pytest.fixture(scope="module")
def sharded_env(tmp_path_factory: pytest.TempPathFactory) -> DemoEnv:
    return make_demo_env(tmp_path_factory, {"COMPOSABLE_CODE_LOCATIONS": "2"})


@pytest.fixture(scope="module")
def sharded_system(sharded_env: DemoEnv) -> Iterator[RunningSystem]:
    with serving_system(sharded_env) as system:
        yield system


def _loaded_at(system: RunningSystem) -> dict[str, float]:
    data = system.dagster.query(_LOCATIONS_UPDATED)["workspaceOrError"]
    return {e["name"]: e["updatedTimestamp"] for e in data["locationEntries"]}


def _run_once(system: RunningSystem, sync_id: str) -> dict:
    started = trigger(system, sync_id)
    assert started.status_code == 201, started.text
    run = wait_for(system, sync_id, started.json()["id"])
    assert run["status"] == "completed", run
    return run


def _wait_until(condition: Callable[[], bool], *, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "Dagster never showed the change"
        time.sleep(0.5)


def _location_or_none(system: RunningSystem, path: list[str]) -> str | None:
    asset = system.dagster.loaded_asset(path)
    return None if asset is None else asset.location


def _location(system: RunningSystem, path: list[str]) -> str:
    asset = system.dagster.loaded_asset(path)
    assert asset is not None, path
    return asset.location


def test_syncs_run_in_their_own_location_and_a_create_reloads_only_that_one(
    sharded_system: RunningSystem, sharded_env: DemoEnv, receiver: Receiver
) -> None:
    system = sharded_system
    assert set(LOCATIONS) <= set(_loaded_at(system))
    by_location: dict[str, list[tuple[str, list[str]]]] = {name: [] for name in LOCATIONS}
    for _ in range(12):  # each lands in either location, by a hash of its audience's id
        sync_id, paths = _hook_sync(system, sharded_env, receiver.url)
        # The trigger waits for the sync's own location to have it.
        assert _run_once(system, sync_id)["rows_added"] > 0
        location = _location(system, paths[1])
        assert _location(system, paths[0]) == location  # a sync beside its audience
        by_location[location].append((sync_id, paths))
        if all(by_location.values()):
            break
    assert all(by_location.values()), "12 audiences all hashed to one location"

    before = _loaded_at(system)
    sync_id, paths = _hook_sync(system, sharded_env, receiver.url)
    _run_once(system, sync_id)
    after = _loaded_at(system)
    mine = _location(system, paths[1])
    [other] = [name for name in LOCATIONS if name != mine]
    assert after[mine] > before[mine]
    assert after[other] == before[other], "a create reloaded the other location too"


def test_a_reference_across_locations_brings_both_audiences_into_one(
    sharded_system: RunningSystem, sharded_env: DemoEnv, receiver: Receiver
) -> None:
    system, out = sharded_system, sharded_env.init_output
    made: dict[str, tuple[str, list[str]]] = {}
    for _ in range(12):
        sync_id, paths = _hook_sync(system, sharded_env, receiver.url)
        _run_once(system, sync_id)
        made.setdefault(_location(system, paths[0]), (sync_id, paths))
        if len(made) == 2:
            break
    assert len(made) == 2, "12 audiences all hashed to one location"
    (first_sync, first_paths), (second_sync, second_paths) = made.values()
    first_id, second_id = (
        httpx.get(f"{system.workspace_url}/audience-syncs/{sync}", headers=system.headers).json()[
            "audience_id"
        ]
        for sync in (first_sync, second_sync)
    )

    # The second audience now keeps only members of the first: one group, one location.
    updated = httpx.put(
        f"{system.workspace_url}/audiences/{second_id}",
        headers=system.headers,
        timeout=60,
        json={
            "parent_model_id": out["model_ids"]["customers"],
            "filter_tree": {"type": "and", "children": [
                {"type": "condition", "condition_type": "audience", "audience_id": first_id,
                 "operator": "is_member"}]},
        },
    )  # fmt: skip
    assert updated.status_code == 200, updated.text
    # While the two locations reload one after the other, the moved ones are in neither.
    _wait_until(
        lambda: (
            len({_location_or_none(system, p) for p in (*first_paths, *second_paths)}) == 1
            and _location_or_none(system, first_paths[0]) is not None
        )
    )
    # Both syncs run there (a run of either launched in the other location would fail:
    # Dagster has its assets in this one only).
    _run_once(system, second_sync)
    _run_once(system, first_sync)
