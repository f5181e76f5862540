"""Dagster's GraphQL API, as the API sidecar uses it. Never imports dagster.

Reload the code location after catalog changes, launch runs of asset selections with our
tags, and read runs and materializations back (run history is Dagster's own).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from composable_dagster.errors import DomainError, NotFoundError
from composable_dagster.names import ASSET_JOB, REPOSITORY


class DagsterUnavailableError(DomainError):
    """Dagster could not be reached, or answered with an error."""


@dataclass(frozen=True, slots=True)
class RunInfo:
    run_id: str
    status: str
    tags: Mapping[str, str]
    start_time: float | None
    end_time: float | None


_RELOAD = """
mutation Reload($location: String!) {
  reloadRepositoryLocation(repositoryLocationName: $location) {
    __typename
    ... on WorkspaceLocationEntry {
      locationOrLoadError { __typename ... on PythonError { message } }
    }
    ... on PythonError { message }
    ... on RepositoryLocationNotFound { message }
  }
}"""

_RESET_SCHEDULE = """
mutation Reset($selector: ScheduleSelector!) {
  resetSchedule(scheduleSelector: $selector) {
    __typename
    ... on ScheduleStateResult { scheduleState { status } }
    ... on PythonError { message }
    ... on UnauthorizedError { message }
  }
}"""

_LAUNCH = """
mutation Launch($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId status } }
    ... on PythonError { message }
    ... on Error { message }
  }
}"""

_ASSET_NODE = """
query AssetNode($key: AssetKeyInput!) {
  assetNodeOrError(assetKey: $key) {
    __typename
    ... on AssetNode { dependencyKeys { path } repository { location { name } } }
  }
}"""


@dataclass(frozen=True, slots=True)
class LoadedAsset:
    """An asset as Dagster has it loaded: its code location and the keys it depends on."""

    location: str
    upstream: tuple[tuple[str, ...], ...]


_RUN_FIELDS = "runId status tags { key value } startTime endTime"

_RUN = f"""
query Run($runId: ID!) {{
  runOrError(runId: $runId) {{
    __typename
    ... on Run {{ {_RUN_FIELDS} }}
    ... on RunNotFoundError {{ message }}
    ... on PythonError {{ message }}
  }}
}}"""

_RUNS = f"""
query Runs($filter: RunsFilter, $limit: Int) {{
  runsOrError(filter: $filter, limit: $limit) {{
    __typename
    ... on Runs {{ results {{ {_RUN_FIELDS} }} }}
    ... on PythonError {{ message }}
  }}
}}"""

_METADATA_ENTRIES = """
metadataEntries {
  label
  ... on IntMetadataEntry { intValue }
  ... on FloatMetadataEntry { floatValue }
  ... on TextMetadataEntry { text }
  ... on MarkdownMetadataEntry { mdStr }
  ... on TableMetadataEntry { table { records } }
}"""

_ASSET_EVENTS = f"""
query AssetEvents($key: AssetKeyInput!, $limit: Int) {{
  assetOrError(assetKey: $key) {{
    __typename
    ... on Asset {{
      assetMaterializations(limit: $limit) {{ runId timestamp {_METADATA_ENTRIES} }}
      assetObservations(limit: $limit) {{ runId timestamp {_METADATA_ENTRIES} }}
    }}
  }}
}}"""


# An unreachable webserver (a dropped SYN, a dead host) must fail a request quickly, not
# after the read timeout: connecting takes milliseconds when Dagster is up.
CONNECT_TIMEOUT = 5.0


class DagsterClient:
    """A thin client of one Dagster webserver's /graphql endpoint.

    `timeout` bounds each query an API request waits for; `reload_timeout` bounds a code
    location reload, which rebuilds every workspace's definitions and may take longer.
    """

    def __init__(
        self, url: str, *, location: str, timeout: float = 30.0, reload_timeout: float = 120.0
    ) -> None:
        self.url = url
        self.location = location
        self.timeout = timeout
        self.reload_timeout = reload_timeout

    def query(
        self,
        document: str,
        variables: Mapping[str, Any] | None = None,
        *,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        limit = httpx.Timeout(timeout or self.timeout, connect=CONNECT_TIMEOUT)
        try:
            response = httpx.post(
                self.url, json={"query": document, "variables": dict(variables or {})},
                timeout=limit,
            )  # fmt: skip
        except httpx.HTTPError as err:
            raise DagsterUnavailableError(f"dagster: cannot reach {self.url}: {err}") from err
        # Dagster answers some errors (an unknown job, say) as HTTP 500 with the real error
        # in the JSON body: read the body before the status.
        try:
            body = response.json()
        except ValueError as err:
            raise DagsterUnavailableError(
                f"dagster: HTTP {response.status_code} without a JSON body"
            ) from err
        if not isinstance(body, dict):
            raise DagsterUnavailableError(f"dagster: HTTP {response.status_code}, not GraphQL")
        if body.get("errors"):
            raise DagsterUnavailableError(f"dagster: {body['errors'][0].get('message')}")
        if not isinstance(body.get("data"), dict):
            raise DagsterUnavailableError(f"dagster: HTTP {response.status_code} without data")
        return body["data"]

    def reload_location(self, location: str | None = None) -> float:
        """Reload a code location (default: the client's), so new catalog rows become
        assets; returns seconds taken."""
        started = time.monotonic()
        location = location or self.location
        data = self.query(_RELOAD, {"location": location}, timeout=self.reload_timeout)
        result = data["reloadRepositoryLocation"]
        if result["__typename"] != "WorkspaceLocationEntry":
            raise DagsterUnavailableError(f"dagster: reload failed: {result.get('message')}")
        load = result.get("locationOrLoadError") or {}
        if load.get("__typename") == "PythonError":
            raise DagsterUnavailableError(
                f"dagster: code location failed to load: {load['message']}"
            )
        return time.monotonic() - started

    def reset_schedule(self, schedule_name: str, *, location: str | None = None) -> str:
        """Forget any state toggled in the UI: the schedule (of `location`, default the
        client's) takes its default status again (running for an active sync, stopped for a
        paused one). Returns the status."""
        selector = {
            "repositoryLocationName": location or self.location,
            "repositoryName": REPOSITORY,
            "scheduleName": schedule_name,
        }
        result = self.query(_RESET_SCHEDULE, {"selector": selector})["resetSchedule"]
        if result["__typename"] != "ScheduleStateResult":
            raise DagsterUnavailableError(
                f"dagster: schedule reset failed: {result.get('message')}"
            )
        return result["scheduleState"]["status"]

    def launch_assets(
        self,
        asset_paths: Sequence[Sequence[str]],
        *,
        tags: Mapping[str, str],
        location: str | None = None,
    ) -> RunInfo:
        """Launch one run materializing `asset_paths` (all of code location `location`,
        default the client's), tagged with `tags`."""
        params = {
            "selector": {
                "repositoryLocationName": location or self.location,
                "repositoryName": REPOSITORY,
                "jobName": ASSET_JOB,
                "assetSelection": [{"path": list(p)} for p in asset_paths],
            },
            "runConfigData": {},
            "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in tags.items()]},
        }
        result = self.query(_LAUNCH, {"params": params})["launchRun"]
        if result["__typename"] != "LaunchRunSuccess":
            raise DagsterUnavailableError(
                f"dagster: launch failed ({result['__typename']}): {result.get('message')}"
            )
        return self.run(result["run"]["runId"])

    def loaded_asset(self, asset_path: Sequence[str]) -> LoadedAsset | None:
        """Where Dagster has `asset_path` loaded and what it depends on; None if no code
        location has it (yet)."""
        data = self.query(_ASSET_NODE, {"key": {"path": list(asset_path)}})["assetNodeOrError"]
        if data["__typename"] != "AssetNode":
            return None
        return LoadedAsset(
            location=data["repository"]["location"]["name"],
            upstream=tuple(tuple(d["path"]) for d in data["dependencyKeys"]),
        )

    def run(self, run_id: str) -> RunInfo:
        """The run `run_id`; NotFoundError if Dagster has no such run."""
        result = self.query(_RUN, {"runId": run_id})["runOrError"]
        if result["__typename"] == "RunNotFoundError":
            raise NotFoundError("run", run_id)
        if result["__typename"] != "Run":
            raise DagsterUnavailableError(f"dagster: {result.get('message')}")
        return _run_info(result)

    def runs(
        self, *, tags: Mapping[str, str], statuses: Sequence[str] | None = None, limit: int = 100
    ) -> list[RunInfo]:
        """Runs carrying all of `tags`, newest first."""
        run_filter: dict[str, Any] = {"tags": [{"key": k, "value": v} for k, v in tags.items()]}
        if statuses:
            run_filter["statuses"] = list(statuses)
        result = self.query(_RUNS, {"filter": run_filter, "limit": limit})["runsOrError"]
        if result["__typename"] != "Runs":
            raise DagsterUnavailableError(f"dagster: {result.get('message')}")
        return [_run_info(r) for r in result["results"]]

    def materializations(
        self, asset_path: Sequence[str], *, limit: int = 20
    ) -> list[dict[str, Any]]:
        """The asset's latest materializations: run id, timestamp and metadata by label."""
        return self.asset_events(asset_path, limit=limit)["assetMaterializations"]

    def asset_events(
        self, asset_path: Sequence[str], *, limit: int = 20
    ) -> dict[str, list[dict[str, Any]]]:
        """The asset's latest materializations and observations (`assetMaterializations`,
        `assetObservations`), newest first: run id, timestamp and metadata by label."""
        data = self.query(_ASSET_EVENTS, {"key": {"path": list(asset_path)}, "limit": limit})
        asset = data["assetOrError"]
        kinds = ("assetMaterializations", "assetObservations")
        if asset["__typename"] != "Asset":
            return {kind: [] for kind in kinds}
        return {
            kind: [
                {
                    "run_id": m["runId"],
                    "timestamp": m["timestamp"],
                    "metadata": {e["label"]: _entry_value(e) for e in m["metadataEntries"]},
                }
                for m in asset[kind]
            ]
            for kind in kinds
        }

    def wait_for_run(self, run_id: str, *, timeout: float, poll: float = 0.5) -> RunInfo:
        deadline = time.monotonic() + timeout
        while True:
            info = self.run(run_id)
            if info.status in ("SUCCESS", "FAILURE", "CANCELED") or time.monotonic() > deadline:
                return info
            time.sleep(poll)


def _run_info(raw: Mapping[str, Any]) -> RunInfo:
    return RunInfo(
        run_id=raw["runId"],
        status=raw["status"],
        tags={t["key"]: t["value"] for t in raw.get("tags", [])},
        start_time=raw.get("startTime"),
        end_time=raw.get("endTime"),
    )


def _entry_value(entry: Mapping[str, Any]) -> Any:
    for field in ("intValue", "floatValue", "text", "mdStr"):
        if field in entry:
            return entry[field]
    if "table" in entry:  # records arrive as JSON strings
        return [json.loads(record) for record in entry["table"]["records"]]
    return None
