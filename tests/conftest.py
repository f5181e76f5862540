"""Fixtures shared by the whole suite: real engines only.

PostgreSQL comes from `COMPOSABLE_TEST_PG_URL` (scripts/test starts the machine's cluster and
sets it). A test that needs PostgreSQL fails when it is missing; it is never skipped, so a
green run always means PostgreSQL was exercised.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from composable_dagster.api.dagster_client import DagsterClient
from tests.webhook_receiver import Receiver, serving_receiver


def _server_url() -> sa.URL:
    raw = os.environ.get("COMPOSABLE_TEST_PG_URL")
    if not raw:
        pytest.fail(
            "COMPOSABLE_TEST_PG_URL is not set: run the suite with scripts/test, "
            "which starts PostgreSQL"
        )
    return sa.make_url(raw)


@pytest.fixture(scope="session")
def pg_server_url() -> sa.URL:
    """URL of the test PostgreSQL server's default test database."""
    return _server_url()


@pytest.fixture
def pg_url(pg_server_url: sa.URL) -> Iterator[str]:
    """A brand-new, empty PostgreSQL database for one test, dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    admin = sa.create_engine(pg_server_url, isolation_level="AUTOCOMMIT")
    # "source database template1 is being accessed by other users": another CREATE
    # DATABASE is copying the template right now; it passes in a moment.
    _execute_retrying(admin, f'CREATE DATABASE "{name}"', retry_on=sa.exc.OperationalError)
    try:
        yield pg_server_url.set(database=name).render_as_string(hide_password=False)
    finally:
        # A session of another role (an autovacuum worker) may hold it for a moment.
        drop = f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'
        _execute_retrying(admin, drop, retry_on=sa.exc.DBAPIError)
        admin.dispose()


def _execute_retrying(
    admin: sa.Engine, statement: str, *, retry_on: type[Exception], attempts: int = 5
) -> None:
    """Run one administrative statement, retrying a transient `retry_on` with backoff."""
    for attempt in range(attempts):
        try:
            with admin.connect() as conn:
                conn.execute(sa.text(statement))
            return
        except retry_on:
            if attempt == attempts - 1:
                raise
            time.sleep(0.5 * (attempt + 1))


DEMO_CUSTOMERS = 2_000


@dataclass(frozen=True)
class DemoEnv:
    """A directory where `composable init --demo` ran (small scale), and what it printed."""

    cwd: Path
    env: dict[str, str]
    init_output: dict


def run_cli(args: list[str], *, cwd: Path, env: dict[str, str], timeout: float = 600) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "composable_dagster.cli", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    assert result.returncode == 0, f"composable {args} failed:\n{result.stderr[-3000:]}"
    return result.stdout


@pytest.fixture(scope="session")
def demo_env(tmp_path_factory: pytest.TempPathFactory) -> DemoEnv:
    return make_demo_env(tmp_path_factory)


def make_demo_env(
    tmp_path_factory: pytest.TempPathFactory, extra_env: dict[str, str] | None = None
) -> DemoEnv:
    """`composable init --demo` in a new directory, with `extra_env` for what runs there."""
    cwd = tmp_path_factory.mktemp("demo")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COMPOSABLE_", "DAGSTER_"))}
    env["DAGSTER_HOME"] = str(cwd / ".composable" / "dagster")
    env.update(extra_env or {})
    output = run_cli(["init", "--demo", "--customers", str(DEMO_CUSTOMERS)], cwd=cwd, env=env)
    return DemoEnv(cwd=cwd, env=env, init_output=json.loads(output))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_http(url: str, *, timeout: float, process: subprocess.Popen | None = None) -> None:
    """Poll `url` until it answers (any status below 500), or fail with what is known."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            pytest.fail(f"process exited with {process.returncode} before {url} answered")
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    pytest.fail(f"{url} did not answer within {timeout} s")


@dataclass(frozen=True)
class RunningSystem:
    """`composable serve` (dagster dev + API) on free ports over the demo workspace."""

    api: str
    dagster: DagsterClient
    headers: dict[str, str]
    workspace_url: str


@pytest.fixture(scope="session")
def running_system(demo_env: DemoEnv) -> Iterator[RunningSystem]:
    with serving_system(demo_env) as system:
        yield system


@contextlib.contextmanager
def serving_system(demo_env: DemoEnv) -> Iterator[RunningSystem]:
    """`composable serve` over `demo_env` on free ports, stopped at the end."""
    dagster_port, api_port = free_port(), free_port()
    log = (demo_env.cwd / "serve.log").open("w")
    serve = subprocess.Popen(
        [sys.executable, "-m", "composable_dagster.cli", "serve",
         "--dagster-port", str(dagster_port), "--api-port", str(api_port)],
        cwd=demo_env.cwd, env=demo_env.env, start_new_session=True,
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        wait_for_http(f"http://127.0.0.1:{api_port}/docs", timeout=60, process=serve)
        wait_for_http(f"http://127.0.0.1:{dagster_port}/server_info", timeout=180, process=serve)
        workspace_id = demo_env.init_output["workspace_id"]
        yield RunningSystem(
            api=f"http://127.0.0.1:{api_port}",
            dagster=DagsterClient(
                f"http://127.0.0.1:{dagster_port}/graphql", location="composable"
            ),
            headers={
                "Authorization": f"Bearer {demo_env.init_output['api_key']}",
                "X-Workspace-ID": workspace_id,
            },
            workspace_url=f"http://127.0.0.1:{api_port}/api/v1/workspaces/{workspace_id}",
        )
    finally:
        os.killpg(serve.pid, signal.SIGINT)
        try:
            serve.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(serve.pid, signal.SIGKILL)
        log.close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A webhook receiver: a real HTTP server on 127.0.0.1 (tests/webhook_receiver.py)."""
    with serving_receiver() as running:
        yield running
