"""The API keeps a DuckDB warehouse open between requests (warehouse_hold_seconds), and lets
go of it as soon as it stops: a process that served the API and goes on (a test run, an
embedding app) can then open the file with its own settings."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest
from fastapi.testclient import TestClient

from composable_dagster.api.app import create_app
from composable_dagster.settings import Settings

from ..conftest import free_port
from .conftest import create_demo_models, make_tenant


def test_a_stopped_api_lets_go_of_the_held_warehouse(tmp_path: Path, warehouse_url: str) -> None:
    settings = Settings(
        home=tmp_path / "home",
        catalog_url=f"sqlite:///{tmp_path / 'catalog.sqlite'}",
        warehouse_url=warehouse_url,
        dagster_url=f"http://127.0.0.1:{free_port()}/graphql",
        warehouse_hold_seconds=600,
    )
    path = warehouse_url.removeprefix("duckdb:///")
    with TestClient(create_app(settings)) as client:
        tenant = make_tenant(settings, "Holder")
        create_demo_models(client, tenant)  # reads the warehouse's columns
        # Held: the API's instance (opened with its own settings) is still open.
        with pytest.raises(duckdb.ConnectionException, match="different configuration"):
            duckdb.connect(path, read_only=True)
    with duckdb.connect(path, read_only=True) as con:
        assert con.execute("SELECT count(*) FROM analytics.customers").fetchone() == (3,)
