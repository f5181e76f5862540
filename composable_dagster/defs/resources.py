"""Resources of the code location.

Resource config is stored by Dagster (in the definitions' snapshots, with every run), so no
secret is ever a config value here: a URL that may carry a password, and the secret key, are
given as the environment variable they come from (`dg.EnvVar`), which the run worker reads.
"""

import os
from pathlib import Path

import dagster as dg

from composable_dagster.catalog.db import catalog_session
from composable_dagster.catalog.resolve import (
    AudienceRun,
    SyncRun,
    load_audience_run,
    load_sync_run,
)
from composable_dagster.catalog.secret_box import load_secret_box
from composable_dagster.destinations import DestinationScope
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
    """The catalog, read when a run starts: what a run does is never in the definitions,
    so an edit needs no reload, and destination secrets (decrypted here) never enter
    Dagster's storage."""

    catalog_url: str
    secret_key: str | None = None  # always a dg.EnvVar: see `catalog_resource`
    secret_key_file: str
    export_root: str
    file_protocols: str = ""

    def audience_run(self, audience_id: str) -> AudienceRun:
        """The audience as stored now (NotFoundError once it is deleted)."""
        with catalog_session(self.catalog_url) as session:
            return load_audience_run(session, audience_id=audience_id)

    def sync_run(self, sync_id: str) -> SyncRun:
        """The sync as stored now, its destination's secrets decrypted (NotFoundError once
        it is deleted; InvalidInputError when it cannot run as stored)."""
        box = load_secret_box(keys=self.secret_key, key_file=Path(self.secret_key_file))
        protocols = frozenset(p for p in self.file_protocols.split(",") if p)

        def scope_for(workspace_slug: str) -> DestinationScope:
            return DestinationScope(
                export_root=Path(self.export_root),
                workspace_slug=workspace_slug,
                file_protocols=protocols,
            )

        with catalog_session(self.catalog_url) as session:
            return load_sync_run(session, sync_id=sync_id, scope_for=scope_for, box=box)


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
