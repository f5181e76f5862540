"""An asset per audience (its membership, materialized from the compiled filter SQL), one
subsettable multi-asset per workspace.

(No `from __future__ import annotations` in this package: Dagster reads real annotations.)
"""

import graphlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import dagster as dg

from composable_dagster.defs.resources import ActivationStoreResource, CatalogResource
from composable_dagster.errors import NotFoundError, WarehouseError
from composable_dagster.filters import FilterError, compile_members
from composable_dagster.names import (
    META_AUDIENCE_ID,
    META_CATALOG_VERSION,
    TAG_KIND,
    TAG_OVERRIDE_SAFETY,
    overrides_safety,
)
from composable_dagster.spec.sync import SyncSpec
from composable_dagster.sync.plan import membership_row_hash
from composable_dagster.warehouse.activation import MembershipChange

NOT_EMPTY_CHECK = "not_empty"
DROP_CHECK = "member_count_drop"


@dataclass(frozen=True, slots=True)
class AudienceAssetSpec:
    """The audience's place in the graph. What it computes is read when its run starts."""

    key: dg.AssetKey
    audience_id: str
    name: str
    description: str
    group_name: str
    deps: Sequence[dg.AssetKey]
    kind: str
    max_member_drop: float


def build_audience_assets(specs: Sequence[AudienceAssetSpec], *, name: str) -> dg.AssetsDefinition:
    """One subsettable multi-asset for the audiences of a workspace, each with two blocking
    checks that stop its syncs on a bad membership.

    One op for them all, not an `@asset` each: building 2,000 decorated assets (their ops,
    signatures, resource checks) was most of a 1,000-audience load. A run materializes only
    the audiences it selected, upstream ones first.
    """
    by_key = {spec.key: spec for spec in specs}

    @dg.multi_asset(
        name=name,
        specs=[
            dg.AssetSpec(
                key=spec.key,
                deps=list(spec.deps),
                group_name=spec.group_name,
                kinds={spec.kind, "audience"},
                description=f"**{spec.name}** (audience)\n\n{spec.description}".strip(),
                metadata={META_AUDIENCE_ID: spec.audience_id},
                tags={TAG_KIND: "audience"},
            )
            for spec in specs
        ],
        check_specs=[check for spec in specs for check in audience_checks(spec)],
        can_subset=True,
    )
    def audiences(
        context: dg.AssetExecutionContext,
        activation: ActivationStoreResource,
        catalog: CatalogResource,
    ) -> Iterator[dg.MaterializeResult]:
        selected = [by_key[key] for key in context.selected_asset_keys]
        for spec in dependency_order(selected):
            yield materialize_audience(context, spec, activation=activation, catalog=catalog)

    return audiences


def audience_checks(spec: AudienceAssetSpec) -> list[dg.AssetCheckSpec]:
    return [
        dg.AssetCheckSpec(
            NOT_EMPTY_CHECK,
            asset=spec.key,
            blocking=True,
            description="The audience has at least one member (an empty audience would make "
            "a mirror sync remove everyone).",
        ),
        dg.AssetCheckSpec(
            DROP_CHECK,
            asset=spec.key,
            blocking=True,
            description=f"The member count fell by at most {spec.max_member_drop:.0%} since the "
            "last materialization that passed its checks (a failed one does not move that "
            f"base; a run tagged {TAG_OVERRIDE_SAFETY}=true passes and moves it).",
        ),
    ]


def dependency_order(specs: Sequence[AudienceAssetSpec]) -> list[AudienceAssetSpec]:
    """`specs` with each after the selected audiences it references."""
    selected = {spec.key: spec for spec in specs}
    order = graphlib.TopologicalSorter(
        {spec.key: [d for d in spec.deps if d in selected] for spec in specs}
    )
    return [selected[key] for key in order.static_order()]


def materialize_audience(
    context: dg.AssetExecutionContext,
    spec: AudienceAssetSpec,
    *,
    activation: ActivationStoreResource,
    catalog: CatalogResource,
) -> dg.MaterializeResult:
    """Compute one audience's membership from its tree as stored now."""
    started = time.monotonic()
    try:
        run = catalog.audience_run(spec.audience_id)
    except NotFoundError:
        raise dg.Failure(
            description=f"audience {spec.name!r} was deleted after this run was launched; "
            "nothing was computed"
        ) from None
    store = activation.store()
    try:
        compiled = compile_members(
            run.filter_tree,
            parent_model_id=run.parent_model_id,
            schema=run.schema,
            now=datetime.now(UTC),  # the adapter reads the clock; the compiler never does
            dialect=store.dialect,
            audience_id=run.audience_id,
            null_keys=True,  # counted and reported, never members
        )
    except FilterError as err:
        raise dg.Failure(description=f"{run.name}: filter_tree: {err}") from None
    try:
        change = store.replace_members(
            audience_id=run.audience_id,
            members=compiled.expression,
            row_hashes=row_hashes(run.syncs, dialect=store.dialect),
        )
    except WarehouseError as err:
        # The engine's message without hints naming the activation store, or the run
        # timeout that cancelled the query. Not chained: Dagster stores an error's
        # causes with the run, and the engine's own text has those hints.
        raise dg.Failure(description=f"{run.name}: {err}") from None
    duration = time.monotonic() - started
    context.log.info(
        f"{run.name}: {change.member_count} members "
        f"(+{change.added or 0} / -{change.removed or 0}) in {duration:.2f} s"
    )
    if change.rows_without_key:
        context.log.warning(
            f"{run.name}: {change.rows_without_key} matching rows have a NULL key; they "
            "are not members, and its syncs report them as failed rows"
        )
    metadata = membership_metadata(change, sql=compiled.sql, duration=duration)
    metadata[META_CATALOG_VERSION] = dg.MetadataValue.text(run.catalog_version)
    checks = membership_checks(
        change,
        asset_key=spec.key,
        max_member_drop=spec.max_member_drop,
        overridden=overrides_safety(context.run.tags),
    )
    if all(check.passed for check in checks):
        # Only now, so a failed check (or a crash before this line) leaves the old base and
        # the next run is judged against it too: the breaker stays open until the
        # membership recovers or a person overrides.
        try:
            store.record_base(audience_id=run.audience_id, member_count=change.member_count)
        except WarehouseError as err:
            raise dg.Failure(description=f"{run.name}: {err}") from None
    return dg.MaterializeResult(asset_key=spec.key, metadata=metadata, check_results=checks)


def row_hashes(syncs: Sequence[SyncSpec], *, dialect: str) -> dict[str, tuple[str, ...]]:
    """The row hashes of the syncs' mappings, stored with the membership so their diffs
    need not read the parent model (sync/plan.py `membership_row_hash`): name -> columns."""
    hashes: dict[str, tuple[str, ...]] = {}
    for sync in syncs:
        column = membership_row_hash(sync.fields, dialect=dialect)
        if column is not None:
            hashes[column.name] = column.columns
    return hashes


def membership_metadata(change: MembershipChange, *, sql: str, duration: float) -> dict[str, Any]:
    """Numbers an operator charts over time (the UI plots numeric metadata) and the SQL."""
    metadata: dict[str, Any] = {
        "member_count": dg.MetadataValue.int(change.member_count),
        "rows_without_key": dg.MetadataValue.int(change.rows_without_key),
        "duration_seconds": dg.MetadataValue.float(round(duration, 3)),
        "compiled_sql": dg.MetadataValue.md(f"```sql\n{sql}\n```"),
    }
    if change.previous_count is not None:
        metadata["members_added"] = dg.MetadataValue.int(change.added or 0)
        metadata["members_removed"] = dg.MetadataValue.int(change.removed or 0)
        metadata["previous_member_count"] = dg.MetadataValue.int(change.previous_count)
    return metadata


def membership_checks(
    change: MembershipChange,
    *,
    asset_key: dg.AssetKey,
    max_member_drop: float,
    overridden: bool = False,
) -> list[dg.AssetCheckResult]:
    """The two blocking checks; a failed one says why in words (the API shows it as the
    run's `error` and the sync's `status_error`).

    The drop is measured from the audience's base, the count of its last materialization
    that passed (`change.base_count`; the previous count in a store that has none yet), so
    a collapse that failed once fails every run after it. `overridden` (the run's
    TAG_OVERRIDE_SAFETY) passes both, saying what they saw.
    """
    base = change.base_count if change.base_count is not None else change.previous_count
    drop = max(0.0, 1 - change.member_count / base) if base else 0.0
    empty = change.member_count == 0
    dropped = drop > max_member_drop
    fell = f"the member count fell {drop:.1%} (from {base} to {change.member_count})"
    empty_reason = (
        "the audience has no members, so its syncs did not run (a mirror would have removed "
        "everyone)"
    )
    drop_reason = (
        f"{fell} since the last materialization that passed its checks, more than the "
        f"{max_member_drop:.0%} allowed (COMPOSABLE_MAX_MEMBER_DROP), so its syncs did not "
        f"run; a run tagged {TAG_OVERRIDE_SAFETY}=true lets it through"
    )
    if overridden:
        override = f"overridden ({TAG_OVERRIDE_SAFETY}=true): "
        empty_reason = override + f"the audience has {change.member_count} members"
        drop_reason = override + (
            f"the member count went from {base} to {change.member_count}, a drop of "
            f"{drop:.1%} ({max_member_drop:.0%} allowed)"
            if base
            else f"no earlier count to compare {change.member_count} members with"
        )
    return [
        dg.AssetCheckResult(
            asset_key=asset_key,
            check_name=NOT_EMPTY_CHECK,
            passed=overridden or not empty,
            metadata={"member_count": change.member_count, "overridden": overridden},
            description=empty_reason if empty or overridden else None,
        ),
        dg.AssetCheckResult(
            asset_key=asset_key,
            check_name=DROP_CHECK,
            passed=overridden or not dropped,
            metadata={
                "drop_share": round(drop, 4),
                "max_drop_share": max_member_drop,
                "base_member_count": base or 0,
                "previous_member_count": change.previous_count or 0,
                "overridden": overridden,
            },
            description=drop_reason if dropped or overridden else None,
        ),
    ]
