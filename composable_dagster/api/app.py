"""The API sidecar: `create_app(settings)` builds the FastAPI application.

It never imports dagster; it reaches Dagster over GraphQL (`dagster_client.py`). Every
request passes `RequestGuard` (limits.py) first; errors leave as `{"error"}` (errors.py), as
the OpenAPI document says (openapi.py), which `/docs` and `/redoc` render offline.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI

from composable_dagster.api.docs_pages import install_docs
from composable_dagster.api.errors import install_error_handlers
from composable_dagster.api.limits import RequestGuard
from composable_dagster.api.openapi import install_openapi
from composable_dagster.api.reload import GraphState, ReloadTracker
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
from composable_dagster.catalog.db import catalog_session, upgrade_catalog
from composable_dagster.catalog.graph import load_graph
from composable_dagster.catalog.secret_box import secret_box_for
from composable_dagster.names import location_names, schedule_name
from composable_dagster.settings import Settings, get_settings
from composable_dagster.warehouse import Warehouse, release_held_instances

# One router per resource, in the order the document lists them.
ROUTERS: tuple[APIRouter, ...] = tuple(
    module.router
    for module in (
        workspaces, models, relationships, traits, destinations, audiences, splits, syncs,
    )
)  # fmt: skip


@asynccontextmanager
async def _lifespan(_app: FastAPI) -> AsyncIterator[None]:
    yield
    # Requests keep the DuckDB warehouse open for a few idle seconds (settings'
    # warehouse_hold_seconds); a stopped app lets go of it at once.
    release_held_instances()


def graph_reader(settings: Settings) -> Callable[[], GraphState]:
    """Reads the catalog's graph (what Dagster's definitions are built from) as each of its
    code locations builds it: one per shard (catalog/graph.py)."""
    dialect = Warehouse(settings.resolved_warehouse_url).dialect
    locations = location_names(settings.dagster_location, settings.code_locations)

    def read() -> GraphState:
        with catalog_session(settings.resolved_catalog_url) as session:
            graph = load_graph(session, dialect=dialect)
        parts = dict(zip(locations, graph.shards(len(locations)), strict=True))
        syncs = [
            (loc, w, s) for loc, part in parts.items() for w in part.workspaces for s in w.syncs
        ]
        return GraphState(
            digests={loc: part.digest() for loc, part in parts.items()},
            schedule_locations={schedule_name(w.slug, s.slug): loc for loc, w, s in syncs},
            sync_locations={s.id: loc for loc, _w, s in syncs},
        )

    return read


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app for `settings` (default: the environment), migrating the catalog first."""
    settings = settings or get_settings()
    settings.check_catalog_apart()
    # The secret key (created when missing) also encrypts an older catalog's plaintext secrets.
    upgrade_catalog(settings.resolved_catalog_url, secret_box=secret_box_for(settings))
    app = FastAPI(
        title="composable-dagster API",
        version="0.1.0",
        description="Zeotap Composable-compatible Audiences and Syncs API, run by Dagster.",
        docs_url=None,  # served offline by install_docs
        redoc_url=None,
        lifespan=_lifespan,
    )
    app.state.settings = settings
    app.state.reloads = ReloadTracker(read_graph=graph_reader(settings))
    install_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    install_docs(app)
    install_openapi(app, routes=[route for router in ROUTERS for route in router.routes])
    app.add_middleware(RequestGuard, max_body_bytes=settings.max_body_bytes)
    return app
