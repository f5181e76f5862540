"""One asset per sync, downstream of its audience, and its cron schedule.

Schedules share one asset job and carry the sync's tags on every run, so scheduled runs are
found by `composable/sync_id` like API-triggered ones, and the per-sync run-queue limit in
dagster.yaml keeps runs of one sync from overlapping.
"""

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import dagster as dg

from composable_dagster.defs.resources import ActivationStoreResource

SYNC_JOB_NAME = "composable_syncs"
TAG_WORKSPACE = "composable/workspace_id"
TAG_SYNC = "composable/sync_id"
TAG_TRIGGER = "composable/trigger"


@dataclass(frozen=True, slots=True)
class SyncAssetSpec:
    key: dg.AssetKey
    audience_key: dg.AssetKey
    sync_id: str
    audience_id: str
    workspace_id: str
    name: str
    description: str
    group_name: str
    destination_type: str
    sync_mode: str
    schedule: str | None
    status: str

    def run_tags(self, trigger: str) -> Mapping[str, str]:
        return {TAG_WORKSPACE: self.workspace_id, TAG_SYNC: self.sync_id, TAG_TRIGGER: trigger}


def build_sync_asset(spec: SyncAssetSpec) -> dg.AssetsDefinition:
    @dg.asset(
        key=spec.key,
        deps=[spec.audience_key],
        group_name=spec.group_name,
        kinds={spec.destination_type, "sync"},
        description=f"**{spec.name}** (sync, mode {spec.sync_mode})\n\n{spec.description}".strip(),
        metadata={
            "composable/sync_id": spec.sync_id,
            "sync_mode": spec.sync_mode,
            "schedule": spec.schedule or "manual",
            "status": spec.status,
        },
        tags={"composable/kind": "sync"},
    )
    def sync(
        context: dg.AssetExecutionContext, activation: ActivationStoreResource
    ) -> dg.MaterializeResult:
        started = time.monotonic()
        adds, removes = activation.store().plan_counts(
            sync_id=spec.sync_id, audience_id=spec.audience_id
        )
        context.log.info(f"{spec.name}: plan {adds} to add, {removes} to remove")
        metadata: dict[str, Any] = {
            "rows_planned_add": dg.MetadataValue.int(adds),
            "rows_planned_remove": dg.MetadataValue.int(removes),
            "duration_seconds": dg.MetadataValue.float(round(time.monotonic() - started, 3)),
        }
        return dg.MaterializeResult(metadata=metadata)

    return sync


def build_sync_schedule(spec: SyncAssetSpec) -> dg.ScheduleDefinition:
    """A schedule running [audience, sync]; stopped unless the sync is active."""

    @dg.schedule(
        name=f"{spec.group_name}__{spec.key.path[-1]}__schedule",
        cron_schedule=spec.schedule or "",
        job_name=SYNC_JOB_NAME,
        execution_timezone="UTC",
        default_status=(
            dg.DefaultScheduleStatus.RUNNING
            if spec.status == "active"
            else dg.DefaultScheduleStatus.STOPPED
        ),
        description=f"Runs sync {spec.name!r} ({spec.schedule}, UTC)",
    )
    def _schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
        return dg.RunRequest(
            asset_selection=[spec.audience_key, spec.key], tags=dict(spec.run_tags("schedule"))
        )

    return _schedule
