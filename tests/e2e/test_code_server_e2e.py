"""The catalog's code server on a real `composable serve` (defs/code_server.py): a reload
rebuilds the definitions in the same process under a new server id, shows a load error as
Dagster does, and recovers at the next reload; a sync's schedule shows its target; the
server ends when the process that started it is killed."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from dagster._grpc.client import DagsterGrpcClient

from composable_dagster.api.dagster_client import DagsterUnavailableError
from composable_dagster.catalog.db import catalog_session
from composable_dagster.catalog.tables import Audience, Sync
from composable_dagster.dbt_project import dbt_state_dir, dbt_target_dir
from composable_dagster.names import ASSET_JOB, REPOSITORY, schedule_name
from composable_dagster.settings import Settings

from ..conftest import DemoEnv, RunningSystem
from ..defs.test_dagster_e2e import _add_audience_and_sync, _asset_paths

pytestmark = pytest.mark.e2e

_MODULE = "composable_dagster.defs.code_server"


def _processes_in(demo_env: DemoEnv) -> Iterator[tuple[int, list[str]]]:
    """(pid, argv) of every process whose working directory is the demo's."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            continue
        if cwd == str(demo_env.cwd):
            yield int(pid), argv


def _code_server(demo_env: DemoEnv) -> tuple[int, DagsterGrpcClient]:
    """The pid of the running system's code server and a gRPC client on its socket."""
    for pid, argv in _processes_in(demo_env):
        if _MODULE in argv and "--socket" in argv:
            socket_path = argv[argv.index("--socket") + 1]
            if _answers(client := DagsterGrpcClient(socket=socket_path)):
                return pid, client
    pytest.fail("no code server process for this system")


def _answers(client: DagsterGrpcClient) -> bool:
    try:
        return client.ping("here")["echo"] == "here"
    except Exception:  # not listening (yet, or any more): it listens once loaded
        return False


def _started_at(pid: int) -> str | None:
    """The process's start time (clock ticks since boot), None once it is gone or a
    zombie: with its pid, what tells this process from a later one given the same pid."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] == "Z" else fields[19]


def test_a_reload_rebuilds_in_the_same_process(
    running_system: RunningSystem, demo_env: DemoEnv
) -> None:
    pid, client = _code_server(demo_env)
    server_id = client.get_server_id()
    slug, sync_slug, _ = _add_audience_and_sync(running_system, demo_env, "Code server buyers")
    running_system.dagster.reload_location()

    paths = _asset_paths(running_system.dagster)
    assert ("demo", "audiences", slug) in paths
    assert ("demo", "syncs", sync_slug) in paths
    # In process: the same process, a new server id (which the daemon's watch follows).
    assert _code_server(demo_env)[0] == pid
    assert client.get_server_id() != server_id
    # A reload that finds nothing changed keeps the generation: no client refetches.
    reloaded_id = client.get_server_id()
    running_system.dagster.reload_location()
    assert client.get_server_id() == reloaded_id
    assert ("demo", "syncs", sync_slug) in _asset_paths(running_system.dagster)


def test_a_failed_reload_shows_the_error_and_the_next_reload_recovers(
    running_system: RunningSystem, demo_env: DemoEnv
) -> None:
    pid, _ = _code_server(demo_env)
    settings = Settings(home=demo_env.cwd / ".composable")
    manifest = (
        dbt_target_dir(dbt_state_dir(settings.home_dir, settings.resolved_warehouse_url))
        / "manifest.json"
    )
    original = manifest.read_text()
    try:
        # A changed graph makes the reload build, and the build reads the manifest.
        manifest.write_text("{ not a manifest")
        slug, _, _ = _add_audience_and_sync(running_system, demo_env, "Code server broken")
        with pytest.raises(DagsterUnavailableError, match="code location failed to load"):
            running_system.dagster.reload_location()
    finally:
        manifest.write_text(original)
    running_system.dagster.reload_location()

    # The API's own reload of that create may end after ours: wait for the one that loads.
    deadline = time.monotonic() + 60
    while ("demo", "audiences", slug) not in _asset_paths(running_system.dagster):
        assert time.monotonic() < deadline, "the location did not recover"
        time.sleep(0.5)
    assert _code_server(demo_env)[0] == pid


def test_the_code_server_ends_when_the_process_that_started_it_is_killed(
    demo_env: DemoEnv,
) -> None:
    """`composable serve` killed with SIGKILL cannot stop its children: the code server
    notices that the process it was given (--parent-pid) is gone and ends, so it never
    holds its memory forever."""
    socket_path = Path(tempfile.mkdtemp(prefix="composable-test-")) / "code-server.sock"
    parent = subprocess.Popen(
        [sys.executable, "-c",
         "import os, subprocess, sys, time;"
         f"subprocess.Popen([sys.executable, '-m', '{_MODULE}', '--socket', '{socket_path}',"
         " '--location-name', 'composable', '--parent-pid', str(os.getpid())],"
         " start_new_session=True);"
         "time.sleep(600)"],
        cwd=demo_env.cwd, env=demo_env.env, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        client = DagsterGrpcClient(socket=str(socket_path))
        deadline = time.monotonic() + 120
        while not _answers(client):
            assert time.monotonic() < deadline, "the code server never answered"
            time.sleep(0.5)
        [pid] = [p for p, argv in _processes_in(demo_env) if str(socket_path) in argv]
        started = _started_at(pid)
        assert started is not None

        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=10)
        deadline = time.monotonic() + 30
        while _started_at(pid) == started and time.monotonic() < deadline:
            time.sleep(0.2)
        if _started_at(pid) == started:
            os.kill(pid, signal.SIGKILL)
            pytest.fail("the code server outlived the process that started it")
        assert not _answers(client)
    finally:
        if parent.poll() is None:
            os.killpg(parent.pid, signal.SIGKILL)
        shutil.rmtree(socket_path.parent, ignore_errors=True)


_SCHEDULE_TARGET = """
query Target($selector: ScheduleSelector!) {
  scheduleOrError(scheduleSelector: $selector) {
    __typename
    ... on Schedule { pipelineName assetSelection { assetKeys { path } } }
  }
}"""


def test_a_sync_schedule_shows_its_two_assets_as_its_target(
    running_system: RunningSystem, demo_env: DemoEnv
) -> None:
    out = demo_env.init_output
    audience = httpx.post(
        f"{running_system.workspace_url}/audiences", headers=running_system.headers,
        json={"name": "Scheduled target", "parent_model_id": out["model_ids"]["customers"],
              "filter_tree": {"type": "and", "children": [
                  {"type": "condition", "condition_type": "property",
                   "column": "lifetime_value", "operator": "greater_than", "value": 700}]}},
    )  # fmt: skip
    assert audience.status_code == 201, audience.text
    sync = httpx.post(
        f"{running_system.workspace_url}/audience-syncs", headers=running_system.headers,
        json={"name": "Scheduled target sync", "audience_id": audience.json()["id"],
              "destination_id": out["destination_id"], "sync_mode": "mirror",
              "schedule": "0 3 * * *",
              "field_mapping": [{"source_column": "email", "destination_field": "email"}]},
    )  # fmt: skip
    assert sync.status_code == 201, sync.text
    settings = Settings(home=demo_env.cwd / ".composable")
    with catalog_session(settings.resolved_catalog_url) as session:
        audience_slug = session.get(Audience, audience.json()["id"]).slug
        sync_slug = session.get(Sync, sync.json()["id"]).slug
    running_system.dagster.reload_location()

    selector = {
        "repositoryLocationName": running_system.dagster.location,
        "repositoryName": REPOSITORY,
        "scheduleName": schedule_name("demo", sync_slug),
    }
    schedule = running_system.dagster.query(_SCHEDULE_TARGET, {"selector": selector})[
        "scheduleOrError"
    ]
    assert schedule["__typename"] == "Schedule", schedule
    assert schedule["pipelineName"] == ASSET_JOB  # runs still come from the implicit job
    assert sorted(tuple(k["path"]) for k in schedule["assetSelection"]["assetKeys"]) == [
        ("demo", "audiences", audience_slug),
        ("demo", "syncs", sync_slug),
    ]
