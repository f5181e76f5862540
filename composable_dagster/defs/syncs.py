"""An asset per sync (downstream of its audience, one subsettable multi-asset per workspace),
and its cron schedule.

Schedules share one asset job and carry the sync's tags on every run, so scheduled runs are
found by `composable/sync_id` like API-triggered ones, and the per-sync run-queue limit in
dagster.yaml keeps runs of one sync from overlapping.
"""

import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import dagster as dg

from composable_dagster.catalog.resolve import SyncRun
from composable_dagster.defs.resources import ActivationStoreResource, CatalogResource
from composable_dagster.destinations.base import DeliveryError
from composable_dagster.errors import DomainError, NotFoundError
from composable_dagster.names import (
    ASSET_JOB,
    META_CATALOG_VERSION,
    META_SYNC_ID,
    TAG_KIND,
    TRIGGER_SCHEDULE,
    overrides_safety,
    schedule_name,
    sync_run_tags,
)
from composable_dagster.sync.engine import SyncJob, SyncReport, SyncSafetyError, run_sync

ROW_ERRORS_SCHEMA = dg.TableSchema(
    columns=[
        dg.TableColumn("entity_key", "string"),
        dg.TableColumn("operation", "string", description="add, update, remove or reject"),
        dg.TableColumn("error", "string"),
    ]
)


@dataclass(frozen=True, slots=True)
class SyncAssetSpec:
    """The sync's place in the graph. What it sends, and where, is read when its run starts."""

    key: dg.AssetKey
    audience_key: dg.AssetKey
    sync_id: str
    workspace_id: str
    name: str
    description: str
    group_name: str
    destination_type: str
    sync_mode: str
    schedule: str | None
    status: str

    def run_tags(self, trigger: str) -> Mapping[str, str]:
        return sync_run_tags(workspace_id=self.workspace_id, sync_id=self.sync_id, trigger=trigger)


def build_sync_assets(specs: Sequence[SyncAssetSpec], *, name: str) -> dg.AssetsDefinition:
    """One subsettable multi-asset for the syncs of a workspace (see `build_audience_assets`
    for why not an `@asset` each); a run materializes the syncs it selected."""
    by_key = {spec.key: spec for spec in specs}

    @dg.multi_asset(
        name=name,
        specs=[
            dg.AssetSpec(
                key=spec.key,
                deps=[spec.audience_key],
                group_name=spec.group_name,
                kinds={spec.destination_type, "sync"},
                description=(
                    f"**{spec.name}** (sync, mode {spec.sync_mode})\n\n{spec.description}"
                ).strip(),
                metadata={
                    META_SYNC_ID: spec.sync_id,
                    "sync_mode": spec.sync_mode,
                    "schedule": spec.schedule or "manual",
                    "status": spec.status,
                },
                tags={TAG_KIND: "sync"},
            )
            for spec in specs
        ],
        can_subset=True,
    )
    def syncs(
        context: dg.AssetExecutionContext,
        activation: ActivationStoreResource,
        catalog: CatalogResource,
    ) -> Iterator[dg.MaterializeResult]:
        failures: list[dg.Failure] = []
        for key in sorted(context.selected_asset_keys, key=lambda k: k.to_user_string()):
            try:
                yield run_one_sync(context, by_key[key], activation=activation, catalog=catalog)
            except dg.Failure as failure:
                failures.append(failure)  # the other selected syncs still run
        if len(failures) == 1:
            raise failures[0]
        if failures:
            raise dg.Failure(description="; ".join(f.description or "" for f in failures))

    return syncs


def run_one_sync(
    context: dg.AssetExecutionContext,
    spec: SyncAssetSpec,
    *,
    activation: ActivationStoreResource,
    catalog: CatalogResource,
) -> dg.MaterializeResult:
    try:
        # Everything the run does is read now, by id: the definitions carry none of it.
        run = catalog.sync_run(spec.sync_id)
    except NotFoundError:
        raise dg.Failure(
            description=f"sync {spec.name!r} was deleted after this run was launched; "
            "nothing was sent"
        ) from None
    except DomainError as err:
        raise dg.Failure(description=f"sync cannot run: {err}") from None
    progress = SyncProgress(context, spec.key)
    try:
        report = run_sync(
            activation.store(),
            sync_job(run),
            run_id=context.run_id,
            now=datetime.now(UTC),
            log=context.log.info,
            progress=progress.update,
            override_safety=overrides_safety(context.run.tags),
        )
    except SyncSafetyError as err:
        raise dg.Failure(
            description=f"safety stop: {err}", metadata={"safety_stop": str(err)}
        ) from None
    except (DomainError, DeliveryError) as err:
        # `from None`: Dagster stores an exception's causes with the run, and the
        # engine's own message (below ours) may name what a tenant must not see.
        progress.record()
        raise dg.Failure(description=str(err), metadata=progress.metadata()) from None
    except BaseException:  # cancelled (an interrupt), or a bug: say what was delivered
        progress.record()
        raise
    context.log.info(
        f"{run.name}: +{report.added} ~{report.updated} -{report.removed} "
        f"failed {report.failed} in {report.seconds:.2f} s"
    )
    metadata = sync_metadata(report)
    metadata[META_CATALOG_VERSION] = dg.MetadataValue.text(run.catalog_version)
    return dg.MaterializeResult(asset_key=spec.key, metadata=metadata)


class SyncProgress:
    """What a sync's run has delivered, recorded as an observation of its asset (the API's
    counts of a run with no materialization, the UI's asset events): every
    `PROGRESS_EVERY_SECONDS` while it delivers, and once more when it stops early."""

    def __init__(self, context: dg.AssetExecutionContext, key: dg.AssetKey) -> None:
        self._context = context
        self._key = key
        self._last: SyncReport | None = None
        self._recorded: SyncReport | None = None
        self._recorded_at = time.monotonic()

    def update(self, report: SyncReport) -> None:
        self._last = report
        if time.monotonic() - self._recorded_at >= PROGRESS_EVERY_SECONDS:
            self.record()

    def record(self) -> None:
        if self._last is None or self._last is self._recorded:
            return
        self._context.log_event(dg.AssetObservation(asset_key=self._key, metadata=self.metadata()))
        self._recorded, self._recorded_at = self._last, time.monotonic()

    def metadata(self) -> dict[str, Any]:
        return sync_metadata(self._last) if self._last is not None else {}


# A run killed without warning (SIGKILL, out of memory) reported what it had delivered this
# long before it died at most; an observation per batch would flood the event log.
PROGRESS_EVERY_SECONDS = 2.0


def sync_job(run: SyncRun) -> SyncJob:
    """The engine's job for a sync resolved from the catalog."""
    spec = run.spec
    parent = run.schema.models[run.schema.audiences[spec.audience_id].parent_model_id]
    return SyncJob(
        sync_id=spec.sync_id,
        audience_id=spec.audience_id,
        mode=spec.mode,
        fields=spec.fields,
        parent=parent,
        schema=run.schema,
        destination=run.destination,
        destination_config=run.destination_config,
        destination_id=spec.destination_id,
        safety=spec.safety,
        split=spec.split,
    )


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


# The assets a sync's schedule runs, in its metadata: Dagster's snapshot of a schedule of the
# implicit asset job names no target (the UI said "Target: None"), so the code server adds
# this one as the schedule's asset selection (defs/code_server.py).
SCHEDULE_TARGET_METADATA = "composable/target_assets"


def build_sync_schedule(spec: SyncAssetSpec) -> dg.ScheduleDefinition:
    """A schedule running [audience, sync]; stopped unless the sync is active."""

    # ScheduleDefinition itself, not the @schedule decorator: the decorator's signature
    # checks were 0.3 s of every 1,000-sync load.
    def _run_request(_context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
        return dg.RunRequest(
            asset_selection=[spec.audience_key, spec.key],
            tags=dict(spec.run_tags(TRIGGER_SCHEDULE)),
        )

    return dg.ScheduleDefinition(
        name=schedule_name(spec.group_name, spec.key.path[-1]),
        cron_schedule=spec.schedule or "",
        job_name=ASSET_JOB,
        execution_fn=_run_request,
        execution_timezone="UTC",
        default_status=(
            dg.DefaultScheduleStatus.RUNNING
            if spec.status == "active"
            else dg.DefaultScheduleStatus.STOPPED
        ),
        description=f"Runs sync {spec.name!r} ({spec.schedule}, UTC)",
        metadata={
            SCHEDULE_TARGET_METADATA: dg.MetadataValue.json(
                [list(spec.audience_key.path), list(spec.key.path)]
            )
        },
    )
