"""The catalog never lives where workspace SQL runs: a catalog in the warehouse's own
database would be readable by every workspace's SQL (models, sql traits, previews)."""

from __future__ import annotations

from pathlib import Path

import pytest

from composable_dagster.api.app import create_app
from composable_dagster.defs.load import build_definitions
from composable_dagster.settings import Settings


def test_the_api_and_the_code_location_refuse_a_catalog_in_the_warehouse(
    pg_url: str, tmp_path: Path
) -> None:
    # The same PostgreSQL database, named through two drivers.
    shared = Settings(
        home=tmp_path,
        catalog_url=pg_url,
        warehouse_url=pg_url.replace("postgresql+psycopg://", "postgresql://"),
    )
    for start in (create_app, build_definitions):
        with pytest.raises(ValueError, match="name the same database"):
            start(shared)
    # A database of its own for the catalog is fine.
    apart = Settings(home=tmp_path, catalog_url=f"sqlite:///{tmp_path / 'catalog.sqlite'}",
                     warehouse_url=pg_url)  # fmt: skip
    assert create_app(apart).state.settings is apart
