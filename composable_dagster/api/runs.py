"""Sync runs are Dagster runs: this maps them (and the sync asset's materialization
metadata) onto the run object of docs/api.md. Nothing about runs is stored by us."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from composable_dagster.api.dagster_client import DagsterClient, RunInfo
from composable_dagster.names import TAG_SYNC, TAG_TRIGGER

ACTIVE_STATUSES = ("QUEUED", "NOT_STARTED", "STARTING", "STARTED", "MANAGED", "CANCELING")
_STATUS = {
    "QUEUED": "queued",
    "NOT_STARTED": "queued",
    "SUSPENDED": "queued",
    "STARTING": "running",
    "STARTED": "running",
    "MANAGED": "running",
    "CANCELING": "running",
    "SUCCESS": "completed",
    "FAILURE": "failed",
    "CANCELED": "cancelled",
}
_CHECK_EVENT = "AssetCheckEvaluationEvent"
_COUNTS = ("rows_processed", "rows_added", "rows_updated", "rows_removed", "rows_failed")

_RUN_ERRORS = """
query RunErrors($runId: ID!) {
  logsForRun(runId: $runId) {
    __typename
    ... on EventConnection {
      events {
        __typename
        ... on ExecutionStepFailureEvent { error { message } failureMetadata { label } }
        ... on AssetCheckEvaluationEvent {
          evaluation { checkName success description assetKey { path } }
        }
        ... on RunFailureEvent { message }
      }
    }
  }
}"""


def ui_base(graphql_url: str) -> str:
    return graphql_url.removesuffix("/graphql")


def run_object(
    run: RunInfo,
    *,
    sync_id: str,
    metadata: Mapping[str, Any] | None,
    error: str | None,
    ui: str,
) -> dict[str, Any]:
    """The documented run object for one Dagster run of a sync."""
    started = iso_timestamp(run.start_time)
    finished = run.status in ("SUCCESS", "FAILURE", "CANCELED")
    ended = iso_timestamp(run.end_time) if finished else None
    duration = None
    if run.start_time and run.end_time and ended:
        duration = round(run.end_time - run.start_time, 3)
    counts = {name: int((metadata or {}).get(name) or 0) for name in _COUNTS}
    return {
        "id": run.run_id,
        "sync_id": sync_id,
        "status": _STATUS.get(run.status, "running"),
        "trigger": run.tags.get(TAG_TRIGGER, "manual"),
        "started_at": started,
        "completed_at": ended,
        "duration_seconds": duration,
        **counts,
        "row_errors": _row_errors(metadata),
        "error": error,
        "dagster_run_url": f"{ui}/runs/{run.run_id}",
    }


def sync_runs(
    client: DagsterClient, *, sync_id: str, sync_asset_path: Sequence[str], limit: int = 50
) -> list[dict[str, Any]]:
    """Runs of one sync, newest first, with counts from the sync asset's materializations."""
    runs = client.runs(tags={TAG_SYNC: sync_id}, limit=limit)
    metadata = run_counts(client, sync_asset_path, limit=limit)
    ui = ui_base(client.url)
    return [
        run_object(
            run,
            sync_id=sync_id,
            metadata=metadata.get(run.run_id),
            error=run_error(client, run.run_id) if run.status == "FAILURE" else None,
            ui=ui,
        )
        for run in runs
    ]


def run_counts(
    client: DagsterClient, sync_asset_path: Sequence[str], *, limit: int
) -> dict[str, Mapping[str, Any]]:
    """The counts (and row errors) of the sync's latest runs, by run id: a completed run's
    from its materialization; a failed or cancelled one's, and a running one's, from the
    latest progress observation its step recorded (defs/syncs.py): what the destination
    had confirmed when it stopped."""
    events = client.asset_events(list(sync_asset_path), limit=limit)
    counts: dict[str, Mapping[str, Any]] = {}
    for event in events["assetObservations"]:  # newest first: keep each run's latest
        counts.setdefault(event["run_id"], event["metadata"])
    for event in events["assetMaterializations"]:
        counts[event["run_id"]] = event["metadata"]
    return counts


def run_error(client: DagsterClient, run_id: str) -> str:
    """The most specific failure message of a failed run."""
    data = client.query(_RUN_ERRORS, {"runId": run_id})["logsForRun"]
    events = data.get("events", []) if data.get("__typename") == "EventConnection" else []
    # A blocking check that failed stopped the run: its own words say why, where Dagster's
    # step failure only says that "1 blocking asset check failed".
    for event in events:
        evaluation = event.get("evaluation") if event["__typename"] == _CHECK_EVENT else None
        if evaluation and not evaluation["success"]:
            where = "/".join(evaluation["assetKey"]["path"])
            reason = evaluation.get("description") or "it failed"
            return f"check {evaluation['checkName']} of {where} stopped the run: {reason}"
    for event in events:
        if event["__typename"] == "ExecutionStepFailureEvent" and event.get("error"):
            return _first_line(event["error"]["message"])
    for event in events:
        if event["__typename"] == "RunFailureEvent":
            return _first_line(event.get("message") or "run failed")
    return "run failed"


def latest_by_sync(runs: Iterable[RunInfo]) -> dict[str, list[RunInfo]]:
    """Runs grouped by sync id (newest first, as Dagster returns them)."""
    grouped: dict[str, list[RunInfo]] = {}
    for run in runs:
        if TAG_SYNC in run.tags:
            grouped.setdefault(run.tags[TAG_SYNC], []).append(run)
    return grouped


def _row_errors(metadata: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """The run's first per-row errors, from the sync asset's `row_errors` table."""
    records = (metadata or {}).get("row_errors") or []
    return [{name: r.get(name) for name in ("entity_key", "operation", "error")} for r in records]


def _first_line(message: str) -> str:
    # Dagster prefixes step failures with the exception type; keep the user's reason.
    text = message.strip().splitlines()[0] if message.strip() else message
    return text.removeprefix("dagster._core.definitions.events.Failure: ")


def iso_timestamp(timestamp: float | None) -> str | None:
    """A Dagster run timestamp as the API's UTC ISO-8601 string."""
    if not timestamp:
        return None
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
