"""Dependencies shared by every router: settings, the catalog session, auth, the warehouse.

Auth, written once: `Authorization: Bearer <api key>` names a workspace; workspace-scoped
paths also need `X-Workspace-ID`, and both must equal the path's workspace id.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import BackgroundTasks, Depends, Header, Path, Request
from sqlalchemy.orm import Session

from composable_dagster.api.dagster_client import DagsterClient
from composable_dagster.api.reload import ReloadTracker
from composable_dagster.catalog.db import catalog_session
from composable_dagster.catalog.tables import ApiKey
from composable_dagster.catalog.workspaces import find_active_key
from composable_dagster.settings import Settings
from composable_dagster.warehouse import Warehouse


class AuthError(Exception):
    """401 (bad or missing credentials) or 403 (credentials for another workspace)."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code


def get_app_settings(request: Request) -> Settings:
    return request.app.state.settings


SettingsDep = Annotated[Settings, Depends(get_app_settings)]


def get_session(settings: SettingsDep) -> Iterator[Session]:
    # Committed before the response is sent (scope="function" below), so a failed commit is
    # an error response, never a 2xx for data that was not stored.
    with catalog_session(settings.resolved_catalog_url) as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session, scope="function")]


# The two credentials are documented once, as the spec's security schemes (api/openapi.py),
# not as a header parameter of every operation.
CredentialHeader = Annotated[str | None, Header(include_in_schema=False)]


def get_api_key(session: SessionDep, authorization: CredentialHeader = None) -> ApiKey:
    if not authorization:
        raise AuthError(401, "Authorization: missing; send 'Authorization: Bearer <api key>'")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError(401, "Authorization: expected 'Bearer <api key>'")
    key = find_active_key(session, token.strip())
    if key is None:
        raise AuthError(401, "Authorization: invalid or revoked API key")
    return key


ApiKeyDep = Annotated[ApiKey, Depends(get_api_key)]


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling, in which workspace: every workspace-scoped route gets one."""

    workspace_id: str
    api_key_id: str


def get_caller(
    key: ApiKeyDep,
    workspace_id: Annotated[str, Path(alias="id")],
    x_workspace_id: CredentialHeader = None,
) -> Caller:
    if x_workspace_id is None:
        raise AuthError(400, "X-Workspace-ID: header is required on workspace-scoped endpoints")
    if x_workspace_id != workspace_id:
        raise AuthError(403, "X-Workspace-ID: does not match the workspace in the path")
    if key.workspace_id != workspace_id:
        raise AuthError(403, "this API key does not grant access to that workspace")
    return Caller(workspace_id=workspace_id, api_key_id=key.id)


CallerDep = Annotated[Caller, Depends(get_caller)]


def get_warehouse(settings: SettingsDep, _caller: CallerDep) -> Warehouse:
    """The warehouse for an authenticated caller (only then is it opened), already opening
    while the endpoint reads the catalog and compiles."""
    warehouse = Warehouse(
        settings.resolved_warehouse_url,
        read_only=True,
        hold_seconds=settings.warehouse_hold_seconds,
        sql_timeout_seconds=settings.sql_timeout_seconds,
    )
    warehouse.warm()
    return warehouse


WarehouseDep = Annotated[Warehouse, Depends(get_warehouse)]


def get_dagster(settings: SettingsDep) -> DagsterClient:
    return DagsterClient(settings.dagster_url, location=settings.dagster_location)


DagsterDep = Annotated[DagsterClient, Depends(get_dagster)]


def get_reloads(request: Request) -> ReloadTracker:
    return request.app.state.reloads


ReloadsDep = Annotated[ReloadTracker, Depends(get_reloads)]


@dataclass(frozen=True)
class GraphCheck:
    """Call after a write that may change the definitions' graph (a dependency, a key, a
    schedule): once the response is sent, Dagster reloads if, and only if, it did."""

    background: BackgroundTasks
    dagster: DagsterClient
    reloads: ReloadTracker

    def __call__(self, *, schedule: str | None = None) -> None:
        self.background.add_task(self.reloads.request(self.dagster, schedule=schedule))


def get_graph_check(
    background: BackgroundTasks, dagster: DagsterDep, reloads: ReloadsDep
) -> GraphCheck:
    return GraphCheck(background=background, dagster=dagster, reloads=reloads)


GraphCheckDep = Annotated[GraphCheck, Depends(get_graph_check)]
