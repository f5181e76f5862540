"""Resources of the code location.

Resource config is stored by Dagster (in the definitions' snapshots, with every run), so no
secret is ever a config value here: a URL that may carry a password, and the secret key, are
given as the environment variable they come from (`dg.EnvVar`), which the run worker reads.
"""

import os
from pathlib import Path

import dagster as dg
import pydantic

from composable_dagster.catalog.db import catalog_session
from composable_dagster.catalog.destinations import destination_config
from composable_dagster.catalog.secret_box import load_secret_box
from composable_dagster.catalog.tables import Destination
from composable_dagster.destinations import DestinationScope, DestinationType
from composable_dagster.errors import NotFoundError
from composable_dagster.settings import Settings
from composable_dagster.warehouse.activation import ActivationStore

SECRET_KEY_ENV = "COMPOSABLE_SECRET_KEY"


def from_environment(value: str, env_name: str) -> str:
    """`value` as Dagster should store it: `dg.EnvVar(env_name)` when the environment is
    where it came from (a URL with a password stays out of Dagster's storage), else itself
    (a path the settings derived, which holds no secret)."""
    return dg.EnvVar(env_name) if os.environ.get(env_name) == value else value


class ActivationStoreResource(dg.ConfigurableResource):
    """Where audience memberships (and sync snapshots) are stored; see warehouse/activation."""

    home: str
    warehouse_url: str
    memory_limit: str | None = None
    run_sql_timeout_seconds: float | None = None  # per statement; None: no limit

    def store(self) -> ActivationStore:
        return ActivationStore(
            warehouse_url=self.warehouse_url,
            home=Path(self.home),
            memory_limit=self.memory_limit or None,
            run_sql_timeout_seconds=self.run_sql_timeout_seconds,
        )


class CatalogResource(dg.ConfigurableResource):
    """The catalog, read when a run starts: destination secrets never enter the definitions
    (nor, therefore, Dagster's storage); runs decrypt them here."""

    catalog_url: str
    secret_key: str | None = None  # always a dg.EnvVar: see `catalog_resource`
    secret_key_file: str
    export_root: str
    file_protocols: str = ""

    def destination(
        self, *, workspace_id: str, workspace_slug: str, destination_id: str
    ) -> tuple[DestinationType, pydantic.BaseModel]:
        """The destination's type and whole config (secrets included), as stored now."""
        box = load_secret_box(keys=self.secret_key, key_file=Path(self.secret_key_file))
        scope = DestinationScope(
            export_root=Path(self.export_root),
            workspace_slug=workspace_slug,
            file_protocols=frozenset(p for p in self.file_protocols.split(",") if p),
        )
        with catalog_session(self.catalog_url) as session:
            row = session.get(Destination, destination_id)
            if row is None or row.workspace_id != workspace_id:
                raise NotFoundError("destination", destination_id)
            return destination_config(row, scope=scope, box=box)


def catalog_resource(settings: Settings) -> CatalogResource:
    return CatalogResource(
        catalog_url=from_environment(settings.resolved_catalog_url, "COMPOSABLE_CATALOG_URL"),
        secret_key=dg.EnvVar(SECRET_KEY_ENV) if settings.secret_key else None,
        secret_key_file=str(settings.secret_key_file),
        export_root=str(settings.resolved_export_root),
        file_protocols=",".join(sorted(settings.allowed_file_protocols)),
    )


def activation_resource(settings: Settings) -> ActivationStoreResource:
    return ActivationStoreResource(
        home=str(settings.home_dir),
        warehouse_url=from_environment(settings.resolved_warehouse_url, "COMPOSABLE_WAREHOUSE_URL"),
        memory_limit=settings.activation_memory_limit,
        run_sql_timeout_seconds=settings.run_sql_timeout_seconds,
    )
