"""Syncs: the nine endpoints of the seed page. Runs are Dagster runs, read over GraphQL."""

from __future__ import annotations

import logging
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Body, status
from fastapi.responses import JSONResponse

from composable_dagster.api.dagster_client import DagsterClient, DagsterUnavailableError, RunInfo
from composable_dagster.api.deps import (
    CallerDep,
    DagsterDep,
    GraphCheckDep,
    ReloadsDep,
    SessionDep,
    SettingsDep,
)
from composable_dagster.api.reload import ReloadTracker
from composable_dagster.api.runs import (
    ACTIVE_STATUSES,
    iso_timestamp,
    latest_by_sync,
    run_counts,
    run_error,
    run_object,
    sync_runs,
    ui_base,
)
from composable_dagster.api.schemas import Deleted, SyncPublic, SyncRunCreate, SyncRunPublic
from composable_dagster.catalog import syncs as service
from composable_dagster.catalog.common import get_owned
from composable_dagster.catalog.tables import Audience, Sync, Workspace
from composable_dagster.errors import NotFoundError
from composable_dagster.names import (
    TAG_SYNC,
    TAG_WORKSPACE,
    TRIGGER_API,
    audience_path,
    schedule_name,
    sync_path,
    sync_run_tags,
)

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api/v1/workspaces/{id}", tags=["syncs"])


def sync_schedule(session: SessionDep, sync: Sync) -> str | None:
    workspace = session.get(Workspace, sync.workspace_id)
    return schedule_name(workspace.slug, sync.slug) if workspace and sync.schedule else None


def asset_paths(session: SessionDep, sync: Sync) -> tuple[list[str], list[str]]:
    workspace = session.get(Workspace, sync.workspace_id)
    audience = session.get(Audience, sync.audience_id)
    assert workspace is not None and audience is not None
    return list(audience_path(workspace.slug, audience.slug)), list(
        sync_path(workspace.slug, sync.slug)
    )


def public(sync: Sync, runs: list[RunInfo] | None, client: DagsterClient) -> SyncPublic:
    """The sync as stored, with what its runs say: last run, last success, error status."""
    body = SyncPublic.model_validate(sync)
    if not runs:
        return body
    update: dict[str, Any] = {"last_run_id": runs[0].run_id}
    success = next((r for r in runs if r.status == "SUCCESS"), None)
    if success is not None and success.end_time:
        update["last_synced_at"] = iso_timestamp(success.end_time)
    finished = next((r for r in runs if r.status in ("SUCCESS", "FAILURE")), None)
    if sync.status == "active" and finished is not None and finished.status == "FAILURE":
        update["status"] = "error"
        update["status_error"] = _failure_reason(client, finished.run_id)
    return body.model_copy(update=update)


def _failure_reason(client: DagsterClient, run_id: str) -> str:
    # Reads of syncs work without Dagster (as when its runs cannot be listed): the status
    # stays `error`, only its reason is missing.
    try:
        return run_error(client, run_id)
    except DagsterUnavailableError as err:
        log.warning("failure of run %s unavailable: %s", run_id, err)
        return f"run {run_id} failed (its error is unavailable: Dagster did not answer)"


def _runs_of_workspace(client: DagsterClient, workspace_id: str) -> dict[str, list[RunInfo]]:
    try:
        return latest_by_sync(client.runs(tags={TAG_WORKSPACE: workspace_id}, limit=1000))
    except DagsterUnavailableError as err:
        log.warning("sync runs unavailable: %s", err)
        return {}


def _public_many(syncs: list[Sync], client: DagsterClient, workspace_id: str) -> list[SyncPublic]:
    runs = _runs_of_workspace(client, workspace_id) if syncs else {}
    return [public(s, runs.get(s.id), client) for s in syncs]


@router.get("/audience-syncs", response_model=list[SyncPublic])
def list_syncs(session: SessionDep, caller: CallerDep, dagster: DagsterDep) -> list[SyncPublic]:
    syncs = service.list_syncs(session, workspace_id=caller.workspace_id)
    return _public_many(syncs, dagster, caller.workspace_id)


@router.post("/audience-syncs", response_model=SyncPublic, status_code=status.HTTP_201_CREATED)
def create_sync(
    body: service.SyncCreate,
    session: SessionDep,
    caller: CallerDep,
    graph_check: GraphCheckDep,
) -> SyncPublic:
    """Create a sync; 400 names the field at fault. Dagster reloads to add its asset."""
    row = service.create_sync(
        session, workspace_id=caller.workspace_id, spec=body, created_by=caller.api_key_id
    )
    graph_check()
    return SyncPublic.model_validate(row)


@router.get("/audience-syncs/{sync_id}", response_model=SyncPublic)
def get_sync(
    sync_id: str, session: SessionDep, caller: CallerDep, dagster: DagsterDep
) -> SyncPublic:
    row = get_owned(session, Sync, workspace_id=caller.workspace_id, row_id=sync_id)
    return _public_many([row], dagster, caller.workspace_id)[0]


@router.put("/audience-syncs/{sync_id}", response_model=SyncPublic)
def update_sync(
    sync_id: str,
    body: service.SyncUpdate,
    session: SessionDep,
    caller: CallerDep,
    graph_check: GraphCheckDep,
) -> SyncPublic:
    """Partial update. `status: paused` stops the schedule; `active` starts it again."""
    row = service.update_sync(session, workspace_id=caller.workspace_id, sync_id=sync_id, spec=body)
    graph_check(schedule=sync_schedule(session, row))
    return SyncPublic.model_validate(row)


@router.delete("/audience-syncs/{sync_id}", response_model=Deleted)
def delete_sync(
    sync_id: str,
    session: SessionDep,
    caller: CallerDep,
    graph_check: GraphCheckDep,
) -> Deleted:
    service.delete_sync(session, workspace_id=caller.workspace_id, sync_id=sync_id)
    graph_check()
    return Deleted()


@router.post(
    "/audience-syncs/{sync_id}/trigger",
    response_model=SyncRunPublic,
    status_code=status.HTTP_201_CREATED,
    responses={200: {"model": SyncRunPublic, "description": "a run was already queued or running"}},
)
def trigger_sync(
    sync_id: str,
    session: SessionDep,
    caller: CallerDep,
    dagster: DagsterDep,
    reloads: ReloadsDep,
    settings: SettingsDep,
    body: Annotated[SyncRunCreate | None, Body()] = None,
) -> Any:
    """Start a run of the sync with its audience; 201 with the run. While a run of this sync
    is queued or running, that run is returned instead (200): runs never overlap, and an
    `override_safety` asked for then does not apply to it (the run keeps its own tags).

    The body is optional: `{"override_safety": true}` tags the new run so that it passes
    the safety stops once, a person's decision after a stop they have looked into."""
    override_safety = body is not None and body.override_safety
    row = get_owned(session, Sync, workspace_id=caller.workspace_id, row_id=sync_id)
    audience_path, sync_path = asset_paths(session, row)
    ui = ui_base(dagster.url)
    # Before the lock: waiting for a reload may take seconds, and on SQLite the lock holds
    # back every catalog write meanwhile.
    location = _ensure_loaded(
        dagster, reloads, sync_id=row.id, audience_path=audience_path, sync_path=sync_path
    )
    with service.trigger_lock(settings.resolved_catalog_url, row.id):
        active = dagster.runs(tags={TAG_SYNC: row.id}, statuses=ACTIVE_STATUSES, limit=1)
        if active:
            existing = run_object(active[0], sync_id=row.id, metadata=None, error=None, ui=ui)
            return JSONResponse(existing, status_code=status.HTTP_200_OK)
        tags = sync_run_tags(
            workspace_id=row.workspace_id,
            sync_id=row.id,
            trigger=TRIGGER_API,
            override_safety=override_safety,
        )
        run = dagster.launch_assets([audience_path, sync_path], tags=tags, location=location)
    return run_object(run, sync_id=row.id, metadata=None, error=None, ui=ui)


def _ensure_loaded(
    dagster: DagsterClient,
    reloads: ReloadTracker,
    *,
    sync_id: str,
    audience_path: list[str],
    sync_path: list[str],
) -> str:
    """The code location to launch the sync's run in. At once when Dagster has the sync's
    asset downstream of its audience (a location builds a sync only beside its audience,
    catalog/graph.py, so that location has both): what the run does is read from the
    catalog when it starts, so no pending reload matters. Otherwise (a sync just created,
    moved to another audience, or to another shard) wait for the pending reloads, and
    reload its location once more if they did not bring it."""

    def loaded() -> str | None:
        sync = dagster.loaded_asset(sync_path)
        return sync.location if sync and tuple(audience_path) in sync.upstream else None

    if location := loaded():
        return location
    if not reloads.wait_idle(timeout=120):
        raise DagsterUnavailableError("dagster: still loading the latest catalog; retry shortly")
    if location := loaded():
        return location
    reloads.reload_location_of(dagster, sync_id)
    if location := loaded():
        return location
    raise DagsterUnavailableError("dagster: the sync's assets are not loaded; retry shortly")


@router.get("/audience-syncs/{sync_id}/runs", response_model=list[SyncRunPublic])
def list_runs(
    sync_id: str, session: SessionDep, caller: CallerDep, dagster: DagsterDep
) -> list[dict[str, Any]]:
    """The sync's runs, newest first (Dagster's run history)."""
    row = get_owned(session, Sync, workspace_id=caller.workspace_id, row_id=sync_id)
    return sync_runs(dagster, sync_id=row.id, sync_asset_path=asset_paths(session, row)[1])


@router.get("/audience-syncs/{sync_id}/runs/{run_id}", response_model=SyncRunPublic)
def get_run(
    sync_id: str, run_id: str, session: SessionDep, caller: CallerDep, dagster: DagsterDep
) -> dict[str, Any]:
    row = get_owned(session, Sync, workspace_id=caller.workspace_id, row_id=sync_id)
    if not _is_uuid(run_id):  # Dagster's run ids are UUIDs: no need to ask
        raise NotFoundError("run", run_id)
    run = dagster.run(run_id)
    if run.tags.get(TAG_SYNC) != row.id:
        raise NotFoundError("run", run_id)
    counts = run_counts(dagster, asset_paths(session, row)[1], limit=100)
    return run_object(
        run,
        sync_id=row.id,
        metadata=counts.get(run.run_id),
        error=run_error(dagster, run.run_id) if run.status == "FAILURE" else None,
        ui=ui_base(dagster.url),
    )


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


@router.get("/audiences/{aud_id}/syncs", response_model=list[SyncPublic])
def list_audience_syncs(
    aud_id: str, session: SessionDep, caller: CallerDep, dagster: DagsterDep
) -> list[SyncPublic]:
    get_owned(session, Audience, workspace_id=caller.workspace_id, row_id=aud_id)
    syncs = service.list_syncs(session, workspace_id=caller.workspace_id, audience_id=aud_id)
    return _public_many(syncs, dagster, caller.workspace_id)
