"""The Dagster names both adapters use: asset keys, schedule names, run tags, the job.

Neutral ground: plain strings and tuples, no Dagster import, so `defs/` (which builds
them) and `api/` (which launches and finds runs by them) share one spelling of each.
"""

from __future__ import annotations

from collections.abc import Mapping

# Dagster's implicit job over every asset (IMPLICIT_ASSET_JOB_NAME, not exported): schedules
# and API launches select [audience, sync] from it. A job of our own beside it doubled the
# job snapshots the webserver builds on every reload (5-7 s of 25 s at 1,000 syncs).
ASSET_JOB = "__ASSET_JOB"
REPOSITORY = "__repository__"  # the repository name of a `Definitions` code location

# Run tags: how run history is found per workspace and per sync, whoever launched the run.
TAG_WORKSPACE = "composable/workspace_id"
TAG_SYNC = "composable/sync_id"
TAG_TRIGGER = "composable/trigger"  # TRIGGER_API, TRIGGER_SCHEDULE or Dagster's "manual"
TRIGGER_API = "api"  # a run the API triggered (it starts at once: defs/run_coordinator.py)
TRIGGER_SCHEDULE = "schedule"
TAG_RUN_WORKER = "composable/run_worker"  # "host:pid" of the process running it
# "true" on a run a person let through the safety stops (the audience's checks, the sync's
# own): the API trigger's `override_safety`, or a tag added in the Dagster UI's Launchpad.
TAG_OVERRIDE_SAFETY = "composable/override_safety"

# Asset metadata and tags the definitions carry (the ids runs resolve their content by).
META_AUDIENCE_ID = "composable/audience_id"
META_SYNC_ID = "composable/sync_id"
TAG_KIND = "composable/kind"
# Materialization metadata: which version of the catalog rows the run read.
META_CATALOG_VERSION = "catalog_version"


def location_names(base: str, shards: int) -> tuple[str, ...]:
    """The catalog's code locations: `base` alone, or one per shard of the catalog's graph
    (`base_0` ... `base_<shards - 1>`; catalog/graph.py says which audiences each builds)."""
    return (base,) if shards == 1 else tuple(f"{base}_{i}" for i in range(shards))


def audience_path(workspace_slug: str, audience_slug: str) -> tuple[str, str, str]:
    """The audience asset's key: readable, and stable across renames (slugs are fixed)."""
    return (workspace_slug, "audiences", audience_slug)


def sync_path(workspace_slug: str, sync_slug: str) -> tuple[str, str, str]:
    return (workspace_slug, "syncs", sync_slug)


def schedule_name(workspace_slug: str, sync_slug: str) -> str:
    return f"{workspace_slug}__{sync_slug}__schedule"


def sync_run_tags(
    *, workspace_id: str, sync_id: str, trigger: str, override_safety: bool = False
) -> dict[str, str]:
    tags = {TAG_WORKSPACE: workspace_id, TAG_SYNC: sync_id, TAG_TRIGGER: trigger}
    if override_safety:
        tags[TAG_OVERRIDE_SAFETY] = "true"
    return tags


def overrides_safety(tags: Mapping[str, str]) -> bool:
    """Whether a run with `tags` was let through the safety stops (TAG_OVERRIDE_SAFETY)."""
    return tags.get(TAG_OVERRIDE_SAFETY, "").strip().lower() == "true"


def run_worker_tag(host: str, pid: int) -> str:
    """The TAG_RUN_WORKER value of a run worker (defs/run_worker.py writes it)."""
    return f"{host}:{pid}"


def parse_run_worker_tag(value: str) -> tuple[str, int] | None:
    """(host, pid) of a TAG_RUN_WORKER value; None if it is not one."""
    host, _, pid = value.rpartition(":")
    return (host, int(pid)) if host and pid.isdigit() else None
