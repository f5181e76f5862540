"""The API sidecar: `create_app(settings)` builds the FastAPI application.

It never imports dagster; it reaches Dagster over GraphQL (see `graphql.py`, later issues).
"""

from __future__ import annotations

from fastapi import FastAPI

from composable_dagster.api.errors import install_error_handlers
from composable_dagster.api.reload import ReloadTracker
from composable_dagster.api.routers import (
    audiences,
    destinations,
    models,
    relationships,
    splits,
    syncs,
    traits,
    workspaces,
)
from composable_dagster.catalog.db import upgrade_catalog
from composable_dagster.settings import Settings, get_settings


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app for `settings` (default: the environment), migrating the catalog first."""
    settings = settings or get_settings()
    upgrade_catalog(settings.resolved_catalog_url)
    app = FastAPI(
        title="composable-dagster API",
        version="0.1.0",
        description="Zeotap Composable-compatible Audiences and Syncs API, run by Dagster.",
    )
    app.state.settings = settings
    app.state.reloads = ReloadTracker()
    install_error_handlers(app)
    for router in (
        workspaces, models, relationships, traits, destinations, audiences, splits, syncs,
    ):  # fmt: skip
        app.include_router(router.router)
    return app
