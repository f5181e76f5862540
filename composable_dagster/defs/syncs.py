"""One asset per sync, downstream of its audience, and its cron schedule.

Schedules share one asset job and carry the sync's tags on every run, so scheduled runs are
found by `composable/sync_id` like API-triggered ones, and the per-sync run-queue limit in
dagster.yaml keeps runs of one sync from overlapping.
"""

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import dagster as dg

from composable_dagster.defs.resources import ActivationStoreResource, CatalogResource
from composable_dagster.errors import DomainError
from composable_dagster.sync.engine import SyncJob, SyncReport, SyncSafetyError, run_sync

# Dagster's implicit job over every asset (IMPLICIT_ASSET_JOB_NAME, not exported): schedules
# and API launches select [audience, sync] from it. A job of our own beside it doubled the
# job snapshots the webserver builds on every reload (5-7 s of 25 s at 1,000 syncs).
SYNC_JOB_NAME = "__ASSET_JOB"
TAG_WORKSPACE = "composable/workspace_id"
TAG_SYNC = "composable/sync_id"
TAG_TRIGGER = "composable/trigger"
ROW_ERRORS_SCHEMA = dg.TableSchema(
    columns=[
        dg.TableColumn("entity_key", "string"),
        dg.TableColumn("operation", "string", description="add, update, remove or reject"),
        dg.TableColumn("error", "string"),
    ]
)


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
    job: SyncJob | None  # None when the sync cannot run as stored (its status_error says why)
    problem: str = ""

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
        context: dg.AssetExecutionContext,
        activation: ActivationStoreResource,
        catalog: CatalogResource,
    ) -> dg.MaterializeResult:
        if spec.job is None:
            raise dg.Failure(description=f"sync cannot run: {spec.problem}")
        try:
            # The definitions carry the destination with its secrets masked; the run reads
            # the stored config, secrets decrypted, so none is ever in Dagster's storage.
            kind, config = catalog.destination(
                workspace_id=spec.workspace_id,
                workspace_slug=spec.group_name,
                destination_id=spec.job.destination_id,
            )
            job = dataclasses.replace(spec.job, destination=kind, destination_config=config)
            report = run_sync(
                activation.store(),
                job,
                run_id=context.run_id,
                now=datetime.now(UTC),
                log=context.log.info,
            )
        except SyncSafetyError as err:
            raise dg.Failure(
                description=f"safety stop: {err}", metadata={"safety_stop": str(err)}
            ) from err
        except DomainError as err:
            # `from None`: Dagster stores an exception's causes with the run, and the
            # engine's own message (below ours) may name what a tenant must not see.
            raise dg.Failure(description=str(err)) from None
        context.log.info(
            f"{spec.name}: +{report.added} ~{report.updated} -{report.removed} "
            f"failed {report.failed} in {report.seconds:.2f} s"
        )
        return dg.MaterializeResult(metadata=sync_metadata(report))

    return sync


def sync_metadata(report: SyncReport) -> dict[str, Any]:
    """What the run did, as numbers the UI plots, plus the first per-row errors (a table the
    UI shows and the API returns with the run)."""
    metadata: dict[str, Any] = {
        "rows_processed": dg.MetadataValue.int(report.processed),
        "rows_added": dg.MetadataValue.int(report.added),
        "rows_updated": dg.MetadataValue.int(report.updated),
        "rows_removed": dg.MetadataValue.int(report.removed),
        "rows_failed": dg.MetadataValue.int(report.failed),
        "rows_per_second": dg.MetadataValue.float(round(report.rows_per_second, 1)),
        "duration_seconds": dg.MetadataValue.float(round(report.seconds, 3)),
        "planned": dg.MetadataValue.json(report.planned),
        "diff": dg.MetadataValue.text(report.diff),
    }
    if report.errors:
        metadata["row_errors"] = dg.MetadataValue.table(
            records=[
                dg.TableRecord({"entity_key": key, "operation": op, "error": reason})
                for key, op, reason in report.errors
            ],
            schema=ROW_ERRORS_SCHEMA,
        )
    return metadata


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
