"""What the API does when it talks to Dagster: run lookups (404 for runs that are not the
sync's), and reloads that never keep requests waiting.

A real Dagster webserver serves GraphQL in-process here (its own instance storage, no code
location: run storage is all a run lookup needs), so these take a second, not a minute.
"""

from __future__ import annotations

import itertools
import json
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import dagster as dg
import pytest
import uvicorn
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import EmptyWorkspaceTarget
from dagster_webserver.app import create_app_from_workspace_process_context
from fastapi.testclient import TestClient

from composable_dagster.api import reload
from composable_dagster.api.app import create_app
from composable_dagster.api.dagster_client import (
    CONNECT_TIMEOUT,
    DagsterClient,
    DagsterUnavailableError,
)
from composable_dagster.api.reload import GraphState, ReloadTracker
from composable_dagster.names import TAG_SYNC
from composable_dagster.settings import Settings
from tests.webhook_receiver import Receiver

from ..conftest import free_port
from .conftest import Tenant, create_demo_models, make_tenant


@dataclass(frozen=True)
class DagsterServer:
    url: str
    instance: dg.DagsterInstance

    def add_run(self, tags: dict[str, str]) -> str:
        run_id = str(uuid.uuid4())
        self.instance.add_run(dg.DagsterRun(job_name="__ASSET_JOB", run_id=run_id, tags=tags))
        return run_id


@pytest.fixture(scope="module")
def dagster_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DagsterServer]:
    instance = dg.DagsterInstance.local_temp(str(tmp_path_factory.mktemp("dagster_home")))
    port = free_port()
    with WorkspaceProcessContext(instance, EmptyWorkspaceTarget()) as context:
        app = create_app_from_workspace_process_context(context)
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not server.started:
            assert time.monotonic() < deadline, "the Dagster webserver did not start"
            time.sleep(0.05)
        try:
            yield DagsterServer(url=f"http://127.0.0.1:{port}/graphql", instance=instance)
        finally:
            server.should_exit = True
            thread.join(timeout=10)


@dataclass(frozen=True)
class SyncSetup:
    client: TestClient
    tenant: Tenant
    sync_id: str
    other_sync_id: str

    def run_url(self, run_id: str, sync_id: str | None = None) -> str:
        return self.tenant.url(f"/audience-syncs/{sync_id or self.sync_id}/runs/{run_id}")


def _two_syncs(client: TestClient, tenant: Tenant) -> tuple[str, str]:
    ids = create_demo_models(client, tenant)

    def post(path: str, body: dict) -> str:
        response = client.post(tenant.url(path), json=body, headers=tenant.headers)
        assert response.status_code == 201, response.text
        return response.json()["id"]

    audience = post("/audiences", {
        "name": "Buyers", "parent_model_id": ids["customers"],
        "filter_tree": {"type": "and", "children": [
            {"type": "condition", "condition_type": "property", "column": "lifetime_value",
             "operator": "greater_than", "value": 100}]},
    })  # fmt: skip
    destination = post("/destinations", {
        "name": "Files", "destination_type": "file", "config": {"path": "runs-test"},
    })  # fmt: skip
    syncs = [
        post(
            "/audience-syncs",
            {
                "name": name,
                "audience_id": audience,
                "destination_id": destination,
                "sync_mode": "mirror",
                "field_mapping": [{"source_column": "email", "destination_field": "email"}],
            },
        )
        for name in ("First", "Second")
    ]
    return syncs[0], syncs[1]


@pytest.fixture
def with_dagster(settings: Settings, dagster_server: DagsterServer) -> Iterator[SyncSetup]:
    settings = settings.model_copy(update={"dagster_url": dagster_server.url})
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        tenant = make_tenant(settings, "Acme")
        first, second = _two_syncs(client, tenant)
        yield SyncSetup(client=client, tenant=tenant, sync_id=first, other_sync_id=second)


@pytest.fixture
def without_dagster(client: TestClient, tenant: Tenant) -> SyncSetup:
    first, second = _two_syncs(client, tenant)
    return SyncSetup(client=client, tenant=tenant, sync_id=first, other_sync_id=second)


def test_a_run_of_the_sync_is_found(with_dagster: SyncSetup, dagster_server: DagsterServer) -> None:
    run_id = dagster_server.add_run({TAG_SYNC: with_dagster.sync_id})
    response = with_dagster.client.get(
        with_dagster.run_url(run_id), headers=with_dagster.tenant.headers
    )
    assert response.status_code == 200, response.text
    assert response.json()["id"] == run_id
    assert response.json()["sync_id"] == with_dagster.sync_id
    assert response.json()["status"] == "queued"


def test_an_unknown_run_id_is_404(with_dagster: SyncSetup) -> None:
    unknown = str(uuid.uuid4())
    response = with_dagster.client.get(
        with_dagster.run_url(unknown), headers=with_dagster.tenant.headers
    )
    assert response.status_code == 404
    assert response.json() == {"error": f"run {unknown!r} not found"}


def test_a_run_of_another_sync_is_404(
    with_dagster: SyncSetup, dagster_server: DagsterServer
) -> None:
    run_id = dagster_server.add_run({TAG_SYNC: with_dagster.other_sync_id})
    response = with_dagster.client.get(
        with_dagster.run_url(run_id), headers=with_dagster.tenant.headers
    )
    assert response.status_code == 404
    # ...and it is found under its own sync.
    own = with_dagster.run_url(run_id, sync_id=with_dagster.other_sync_id)
    assert with_dagster.client.get(own, headers=with_dagster.tenant.headers).status_code == 200


@pytest.mark.parametrize("run_id", ["not-a-run", "1" * 500, "x y"], ids=["word", "long", "space"])
def test_a_malformed_run_id_is_404_without_asking_dagster(
    without_dagster: SyncSetup, run_id: str
) -> None:
    response = without_dagster.client.get(
        without_dagster.run_url(run_id), headers=without_dagster.tenant.headers
    )
    assert response.status_code == 404, response.text


def test_a_well_formed_run_id_without_dagster_is_503(without_dagster: SyncSetup) -> None:
    response = without_dagster.client.get(
        without_dagster.run_url(str(uuid.uuid4())), headers=without_dagster.tenant.headers
    )
    assert response.status_code == 503
    assert response.json()["error"].startswith("dagster: cannot reach")


# Reloads (api/reload.py): a burst of changes while Dagster is slow costs two reloads, and a
# request that failed after asking for one does not keep triggers waiting.


def _reload_requests(receiver: Receiver) -> int:
    return sum(1 for r in receiver.requests if b"reloadRepositoryLocation" in r.body)


def _changing_graph() -> Callable[[], GraphState]:
    """A graph that differs on every read: every change altered the graph."""
    counter = itertools.count()
    return lambda: GraphState(digests={"composable": str(next(counter))})


def _graph(digest: list[str]) -> Callable[[], GraphState]:
    """A graph of one code location whose digest is `digest[0]` at each read."""
    return lambda: GraphState(digests={"composable": digest[0]})


RELOADED = ("status", 200, {"Content-Type": "application/json"}, json.dumps({"data": {
    "reloadRepositoryLocation": {"__typename": "WorkspaceLocationEntry",
                                 "locationOrLoadError": {"__typename": "RepositoryLocation"}}},
}).encode())  # fmt: skip


def test_a_burst_of_changes_costs_at_most_two_reloads(receiver: Receiver) -> None:
    receiver.script.append(("sleep", 0.5))  # the first reload is slow
    client = DagsterClient(receiver.url, location="composable")
    tracker = ReloadTracker(read_graph=_changing_graph())
    tasks = [tracker.request(client) for _ in range(6)]
    first = threading.Thread(target=tasks[0])
    first.start()
    while not receiver.requests:  # the first reload is under way
        time.sleep(0.01)
    others = [threading.Thread(target=task) for task in tasks[1:]]
    for thread in others:
        thread.start()
    for thread in [first, *others]:
        thread.join(timeout=10)
    assert tracker.wait_idle(timeout=1)
    # One for the first change, one after it for the five that came during it.
    assert _reload_requests(receiver) == 2


def test_a_change_reloads_after_it_is_committed(receiver: Receiver) -> None:
    receiver.script.append(("sleep", 0.3))
    client = DagsterClient(receiver.url, location="composable")
    tracker = ReloadTracker(read_graph=_changing_graph(), settle_seconds=0.05)
    earlier, later = tracker.request(client), tracker.request(client)
    earlier()
    while not receiver.requests:  # its reload started: `later` was asked for, not committed
        time.sleep(0.01)
    later()  # so that reload may not have seen it: another follows
    assert tracker.wait_idle(timeout=5)
    assert _reload_requests(receiver) == 2


def test_a_burst_settles_into_one_reload_and_never_holds_a_worker(receiver: Receiver) -> None:
    """A client creating audiences back to back: each change's task returns at once (a
    waiting task held one of the API's worker threads), and one reload covers them all."""
    client = DagsterClient(receiver.url, location="composable")
    tracker = ReloadTracker(read_graph=_changing_graph(), settle_seconds=0.3)
    slowest = 0.0
    for _ in range(50):
        started = time.monotonic()
        tracker.request(client)()
        slowest = max(slowest, time.monotonic() - started)
        time.sleep(0.005)
    assert slowest < 0.05
    assert _reload_requests(receiver) == 0  # still settling
    time.sleep(0.6)
    assert tracker.wait_idle(timeout=5)
    assert _reload_requests(receiver) == 1


def test_a_trigger_that_waits_does_not_wait_for_the_settling(receiver: Receiver) -> None:
    client = DagsterClient(receiver.url, location="composable")
    tracker = ReloadTracker(read_graph=_changing_graph(), settle_seconds=30)
    tracker.request(client)()
    started = time.monotonic()
    assert tracker.wait_idle(timeout=10)
    assert time.monotonic() - started < 5
    assert _reload_requests(receiver) == 1


def test_an_abandoned_reload_request_stops_blocking(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reload, "ABANDONED_AFTER_SECONDS", 0.3)
    tracker = ReloadTracker(read_graph=_changing_graph())
    tracker.request(DagsterClient(receiver.url, location="composable"))  # never run
    started = time.monotonic()
    assert tracker.wait_idle(timeout=5)
    assert time.monotonic() - started < 2
    assert _reload_requests(receiver) == 0


def test_a_pending_reload_is_waited_for(receiver: Receiver) -> None:
    receiver.script.append(("sleep", 0.4))
    tracker = ReloadTracker(read_graph=_changing_graph())
    task = tracker.request(DagsterClient(receiver.url, location="composable"))
    assert not tracker.wait_idle(timeout=0.1)  # asked for, not started: a trigger waits
    thread = threading.Thread(target=task)
    thread.start()
    assert tracker.wait_idle(timeout=5)
    thread.join()
    assert _reload_requests(receiver) == 1


def test_a_change_that_leaves_the_graph_as_it_was_does_not_reload(receiver: Receiver) -> None:
    """A tree, mapping or destination edit: the graph's digest is the one Dagster loaded."""
    graph = ["v1"]
    tracker = ReloadTracker(read_graph=_graph(graph))
    client = DagsterClient(receiver.url, location="composable")
    receiver.script.extend([RELOADED, RELOADED])
    tracker.request(client)()  # the first change: what Dagster loaded is not known yet
    assert tracker.wait_idle(timeout=5)
    assert (_reload_requests(receiver), tracker.loaded_digests) == (1, {"composable": "v1"})
    for _ in range(5):
        tracker.request(client)()  # content edits
        assert tracker.wait_idle(timeout=5)
    assert _reload_requests(receiver) == 1
    graph[0] = "v2"  # an audience created, say
    tracker.request(client)()
    assert tracker.wait_idle(timeout=5)
    assert (_reload_requests(receiver), tracker.reloads) == (2, 2)


def test_changes_during_a_reload_reload_again_even_if_the_graph_looks_unchanged(
    receiver: Receiver,
) -> None:
    """A pause and a resume committed while a reload runs: the code server may have read
    the pause, so the graph's digest being back where it was proves nothing."""
    graph = ["active"]
    tracker = ReloadTracker(read_graph=_graph(graph), settle_seconds=0.05)
    client = DagsterClient(receiver.url, location="composable")
    receiver.script.extend([("sleep", 0.5, RELOADED), RELOADED])  # a slow reload that works
    tracker.request(client)()  # some change: the first reload starts, slowly
    while not receiver.requests:
        time.sleep(0.01)
    graph[0] = "paused"
    tracker.request(client)()
    graph[0] = "active"
    tracker.request(client)()
    assert tracker.wait_idle(timeout=10)
    assert _reload_requests(receiver) == 2


def test_a_failed_reload_is_tried_again_by_the_next_change(receiver: Receiver) -> None:
    tracker = ReloadTracker(read_graph=_graph(["v1"]))
    client = DagsterClient(receiver.url, location="composable")
    tracker.request(client)()  # the receiver's plain "ok" is no GraphQL answer: not loaded
    assert tracker.wait_idle(timeout=5)
    assert tracker.loaded_digests == {}
    receiver.script.append(RELOADED)
    tracker.request(client)()
    assert tracker.wait_idle(timeout=5)
    assert (_reload_requests(receiver), tracker.loaded_digests) == (2, {"composable": "v1"})


@pytest.fixture
def unanswered_port() -> Iterator[int]:
    """A port whose listen backlog is full: the kernel drops new SYNs, as a dead host does."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    queued = []
    for _ in range(3):
        sock = socket.socket()
        sock.setblocking(False)
        sock.connect_ex(("127.0.0.1", port))
        queued.append(sock)
    time.sleep(0.1)
    try:
        yield port
    finally:
        for sock in [*queued, server]:
            sock.close()


def test_an_unreachable_dagster_fails_fast(unanswered_port: int) -> None:
    client = DagsterClient(f"http://127.0.0.1:{unanswered_port}/graphql", location="composable")
    started = time.monotonic()
    with pytest.raises(DagsterUnavailableError, match="cannot reach"):
        client.run(str(uuid.uuid4()))
    assert time.monotonic() - started < CONNECT_TIMEOUT + 3


RESET = ("status", 200, {"Content-Type": "application/json"}, json.dumps({"data": {
    "resetSchedule": {"__typename": "ScheduleStateResult",
                      "scheduleState": {"status": "RUNNING"}}},
}).encode())  # fmt: skip


def _locations_sent(receiver: Receiver, operation: bytes) -> list[str]:
    """The code location each `operation` request named, in order."""
    found = []
    for request in receiver.requests:
        if operation in request.body:
            variables = request.json()["variables"]
            found.append(
                variables.get("location") or variables["selector"]["repositoryLocationName"]
            )
    return found


def test_a_change_reloads_only_the_code_locations_whose_shard_changed(receiver: Receiver) -> None:
    """Several code locations (COMPOSABLE_CODE_LOCATIONS): a create in one shard reloads
    that location alone, and a schedule is reset in the location that has its sync."""
    digests = {"composable_0": "a0", "composable_1": "b0", "composable_2": "c0"}
    state = [GraphState(digests=dict(digests))]
    tracker = ReloadTracker(read_graph=lambda: state[0], settle_seconds=0.05)
    client = DagsterClient(receiver.url, location="composable_0")
    receiver.script.extend([RELOADED] * 3)
    tracker.request(client)()  # after the API starts, what each loaded is unknown: all three
    assert tracker.wait_idle(timeout=5)
    assert sorted(_locations_sent(receiver, b"reloadRepositoryLocation")) == sorted(digests)

    receiver.requests.clear()
    receiver.script.extend([RELOADED, RESET])
    state[0] = GraphState(
        digests={**digests, "composable_1": "b1"},
        schedule_locations={"demo__new__schedule": "composable_1"},
    )
    tracker.request(client, schedule="demo__new__schedule")()
    assert tracker.wait_idle(timeout=5)
    assert _locations_sent(receiver, b"reloadRepositoryLocation") == ["composable_1"]
    assert _locations_sent(receiver, b"resetSchedule") == ["composable_1"]
    assert tracker.loaded_digests["composable_1"] == "b1"
