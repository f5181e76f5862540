"""Run workers on a real `composable serve`: API triggers start at once in a process forked
from the warm fork server (defs/run_launcher.py, defs/run_coordinator.py), other launches
still queue, a terminated run is cancelled, and a worker killed with SIGKILL fails its run
instead of holding its sync's next trigger back forever."""

from __future__ import annotations

import os
import signal
import socket
import time
import uuid

import httpx
import pytest

from composable_dagster.names import TAG_RUN_WORKER, parse_run_worker_tag

from ..conftest import DemoEnv, RunningSystem
from ..webhook_receiver import Receiver
from .test_syncs_e2e import trigger, wait_for

pytestmark = pytest.mark.e2e

_EVENTS = """
query Events($runId: ID!) {
  logsForRun(runId: $runId) {
    __typename
    ... on EventConnection { events { __typename ... on MessageEvent { message } } }
  }
}"""
_TERMINATE = """
mutation Terminate($runId: String!) {
  terminateRun(runId: $runId) { __typename ... on PythonError { message } }
}"""


def _api(system: RunningSystem, method: str, path: str, **kw: object) -> httpx.Response:
    return httpx.request(  # type: ignore[arg-type]
        method, f"{system.workspace_url}{path}", headers=system.headers, timeout=120, **kw
    )


def _hook_sync(
    system: RunningSystem, demo_env: DemoEnv, url: str, **config: object
) -> tuple[str, list[str]]:
    """A sync of a small audience to the webhook at `url` (and `config`): (sync id, its two
    asset paths)."""
    out, tag = demo_env.init_output, uuid.uuid4().hex[:6]
    audience = _api(system, "POST", "/audiences", json={
        "name": f"Workers {tag}", "parent_model_id": out["model_ids"]["customers"],
        "filter_tree": {"type": "and", "children": [
            {"type": "condition", "condition_type": "property", "column": "lifetime_value",
             "operator": "greater_than", "value": 3000}]},
    })  # fmt: skip
    assert audience.status_code == 201, audience.text
    destination = _api(system, "POST", "/destinations", json={
        "name": f"Workers hook {tag}", "destination_type": "webhook",
        "config": {"url": url, **config},
    })  # fmt: skip
    assert destination.status_code == 201, destination.text
    sync = _api(system, "POST", "/audience-syncs", json={
        "name": f"Workers sync {tag}", "audience_id": audience.json()["id"],
        "destination_id": destination.json()["id"], "sync_mode": "upsert",
        "field_mapping": [{"source_column": "email", "destination_field": "email"}],
    })  # fmt: skip
    assert sync.status_code == 201, sync.text
    paths = [["demo", "audiences", f"workers_{tag}"], ["demo", "syncs", f"workers_sync_{tag}"]]
    return sync.json()["id"], paths


def _event_messages(system: RunningSystem, run_id: str) -> list[tuple[str, str]]:
    data = system.dagster.query(_EVENTS, {"runId": run_id})["logsForRun"]
    return [(e["__typename"], e.get("message") or "") for e in data["events"]]


def _running_worker(system: RunningSystem, run_id: str, receiver: Receiver) -> int:
    """The pid of the run's worker, once it has sent its first request (and sleeps in it)."""
    deadline = time.monotonic() + 120
    while not receiver.requests:
        assert time.monotonic() < deadline, "the run never reached the webhook"
        time.sleep(0.2)
    worker = parse_run_worker_tag(system.dagster.run(run_id).tags[TAG_RUN_WORKER])
    assert worker is not None and worker[0] == socket.gethostname()
    return worker[1]


def test_an_api_trigger_skips_the_queue_and_runs_in_a_forked_worker(
    running_system: RunningSystem, demo_env: DemoEnv, receiver: Receiver
) -> None:
    system = running_system
    sync_id, paths = _hook_sync(system, demo_env, receiver.url)
    started = trigger(system, sync_id)
    assert started.status_code == 201, started.text
    run = wait_for(system, sync_id, started.json()["id"])
    assert run["status"] == "completed" and run["rows_added"] > 0, run

    events = _event_messages(system, run["id"])
    kinds = [kind for kind, _ in events]
    assert "RunEnqueuedEvent" not in kinds  # launched at once, not through the daemon
    worker = parse_run_worker_tag(system.dagster.run(run["id"]).tags[TAG_RUN_WORKER])
    assert worker is not None
    assert ("EngineEvent", f"Started process for run (pid: {worker[1]}).") in events
    assert worker[1] != os.getpid()

    # A launch that is not the API's (the Dagster UI's "Materialize") still queues.
    ui_run = system.dagster.launch_assets(paths, tags={"composable/sync_id": sync_id})
    finished = system.dagster.wait_for_run(ui_run.run_id, timeout=180, poll=0.5)
    assert finished.status == "SUCCESS"
    assert "RunEnqueuedEvent" in [k for k, _ in _event_messages(system, ui_run.run_id)]


def test_terminating_a_run_interrupts_its_worker_and_cancels_it(
    running_system: RunningSystem, demo_env: DemoEnv, receiver: Receiver
) -> None:
    system = running_system
    receiver.script.append(("sleep", 60))  # the first request hangs
    sync_id, _ = _hook_sync(system, demo_env, receiver.url)
    run_id = trigger(system, sync_id).json()["id"]
    pid = _running_worker(system, run_id, receiver)

    result = system.dagster.query(_TERMINATE, {"runId": run_id})["terminateRun"]
    assert result["__typename"] == "TerminateRunSuccess", result
    run = wait_for(system, sync_id, run_id)
    assert run["status"] == "cancelled", run
    deadline = time.monotonic() + 30
    while os.path.exists(f"/proc/{pid}"):
        assert time.monotonic() < deadline, "the interrupted worker did not exit"
        time.sleep(0.2)


def test_a_failed_run_counts_what_the_destination_confirmed(
    running_system: RunningSystem, demo_env: DemoEnv, receiver: Receiver
) -> None:
    """Request 4 fails for good: the run fails with the destination's answer, counts the
    9 members of requests 1-3, and the next run sends only the others."""
    system = running_system
    receiver.script.extend([("status", 200, {}, b"ok")] * 3 + [("status", 503, {}, b"down")])
    sync_id, _ = _hook_sync(system, demo_env, receiver.url, batch_size=3, max_retries=0)
    failed = wait_for(system, sync_id, trigger(system, sync_id).json()["id"])
    assert failed["status"] == "failed", failed
    assert "HTTP 503" in failed["error"], failed
    assert (failed["rows_added"], failed["rows_processed"]) == (9, 9), failed

    rerun = wait_for(system, sync_id, trigger(system, sync_id).json()["id"])
    assert rerun["status"] == "completed", rerun
    keys = [rec["key"] for r in receiver.requests for rec in r.json()["records"]]
    members = rerun["rows_added"] + 9
    assert len(set(keys)) == members > 12
    assert len(keys) == members + 3  # only the refused request was sent twice


def test_a_cancelled_run_counts_what_the_destination_confirmed(
    running_system: RunningSystem, demo_env: DemoEnv, receiver: Receiver
) -> None:
    system = running_system
    receiver.script.extend([("status", 200, {}, b"ok")] * 2 + [("sleep", 60)])
    sync_id, _ = _hook_sync(system, demo_env, receiver.url, batch_size=3)
    run_id = trigger(system, sync_id).json()["id"]
    deadline = time.monotonic() + 120
    while len(receiver.requests) < 3:  # in the third request, which hangs
        assert time.monotonic() < deadline, "the run never reached its third request"
        time.sleep(0.2)
    result = system.dagster.query(_TERMINATE, {"runId": run_id})["terminateRun"]
    assert result["__typename"] == "TerminateRunSuccess", result
    run = wait_for(system, sync_id, run_id)
    assert run["status"] == "cancelled", run
    assert run["rows_added"] == 6, run


def test_a_killed_worker_fails_its_run_and_frees_the_sync(
    running_system: RunningSystem, demo_env: DemoEnv, receiver: Receiver
) -> None:
    system = running_system
    receiver.script.append(("sleep", 120))
    sync_id, _ = _hook_sync(system, demo_env, receiver.url)
    run_id = trigger(system, sync_id).json()["id"]
    pid = _running_worker(system, run_id, receiver)
    # While it runs, a trigger returns that run.
    again = trigger(system, sync_id)
    assert again.status_code == 200 and again.json()["id"] == run_id, again.text

    os.kill(pid, signal.SIGKILL)  # what the OOM killer does: no chance to record anything
    # Dagster's run monitoring (dagster.yaml: every 10 s) asks the launcher about the worker.
    run = wait_for(system, sync_id, run_id)
    assert run["status"] == "failed", run
    assert f"pid {pid}" in (run["error"] or ""), run
    receiver.script.clear()
    retry = trigger(system, sync_id)
    assert retry.status_code == 201 and retry.json()["id"] != run_id, retry.text
    assert wait_for(system, sync_id, retry.json()["id"])["status"] == "completed"
