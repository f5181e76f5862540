"""The API keeps a DuckDB warehouse open between requests (warehouse_hold_seconds), and lets
go of it as soon as it stops: a process that served the API and goes on (a test run, an
embedding app) can then open the file with its own settings."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

import duckdb
import pytest
from fastapi.testclient import TestClient

from composable_dagster.api.app import create_app
from composable_dagster.settings import Settings
from composable_dagster.warehouse import Warehouse, release_held_instances

from ..conftest import free_port
from .conftest import create_demo_models, make_tenant


def _holding_settings(tmp_path: Path, warehouse_url: str) -> Settings:
    """An API that keeps the warehouse open long after each request (no Dagster)."""
    return Settings(
        home=tmp_path / "home",
        catalog_url=f"sqlite:///{tmp_path / 'catalog.sqlite'}",
        warehouse_url=warehouse_url,
        dagster_url=f"http://127.0.0.1:{free_port()}/graphql",
        warehouse_hold_seconds=600,
    )


def test_a_stopped_api_lets_go_of_the_held_warehouse(tmp_path: Path, warehouse_url: str) -> None:
    settings = _holding_settings(tmp_path, warehouse_url)
    path = warehouse_url.removeprefix("duckdb:///")
    with TestClient(create_app(settings)) as client:
        tenant = make_tenant(settings, "Holder")
        create_demo_models(client, tenant)  # reads the warehouse's columns
        # Held: the API's instance (opened with its own settings) is still open.
        with pytest.raises(duckdb.ConnectionException, match="different configuration"):
            duckdb.connect(path, read_only=True)
    with duckdb.connect(path, read_only=True) as con:
        assert con.execute("SELECT count(*) FROM analytics.customers").fetchone() == (3,)


def test_only_an_authenticated_request_opens_the_warehouse(
    tmp_path: Path, warehouse_url: str
) -> None:
    """The API starts opening the warehouse once the caller is authenticated, while the
    endpoint reads the catalog (get_warehouse); a request without a valid key opens
    nothing, so it cannot hold the file against a writer."""
    settings = _holding_settings(tmp_path, warehouse_url)
    path = warehouse_url.removeprefix("duckdb:///")
    with TestClient(create_app(settings)) as client:
        tenant = make_tenant(settings, "Holder")
        body = {"name": "customers", "source_schema": "analytics",
                "source_table": "customers", "primary_key_column": "customer_id"}  # fmt: skip
        forged = {**tenant.headers, "Authorization": "Bearer cdk_forged"}
        refused = client.post(tenant.url("/models"), json=body, headers=forged)
        assert refused.status_code == 401
        with duckdb.connect(path, read_only=True) as con:  # nothing holds the file
            assert con.execute("SELECT count(*) FROM analytics.customers").fetchone() == (3,)
        created = client.post(tenant.url("/models"), json=body, headers=tenant.headers)
        assert created.status_code == 201, created.text
        with pytest.raises(duckdb.ConnectionException, match="different configuration"):
            duckdb.connect(path, read_only=True)


def _open_in_this_process(path: str) -> bool:
    """Whether this process has `path` open (its file descriptors, as the kernel lists
    them): observed without opening the file, which would race the instance under test."""
    target = os.path.realpath(path)
    for fd in Path("/proc/self/fd").iterdir():
        # The instance's background thread opens and closes descriptors while this reads
        # the list: one gone by the time it is read was not `path` held open.
        with contextlib.suppress(FileNotFoundError):
            if os.readlink(fd) == target:
                return True
    return False


def test_warm_opens_the_held_instance_before_any_query(warehouse_url: str) -> None:
    warehouse = Warehouse(warehouse_url, hold_seconds=600)
    path = warehouse_url.removeprefix("duckdb:///")
    assert not _open_in_this_process(path)
    try:
        warehouse.warm()
        deadline = time.monotonic() + 10
        while not _open_in_this_process(path):  # opening runs in the background
            assert time.monotonic() < deadline, "warm() opened nothing"
            time.sleep(0.01)
        assert warehouse.fetch("SELECT count(*) AS n FROM analytics.customers").rows == ({"n": 3},)
    finally:
        release_held_instances()
    assert not _open_in_this_process(path)
