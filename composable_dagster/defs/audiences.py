"""One asset per audience: its membership, materialized from the compiled filter SQL.

(No `from __future__ import annotations` in this package: Dagster reads real annotations.)
"""

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import dagster as dg

from composable_dagster.defs.resources import ActivationStoreResource
from composable_dagster.errors import WarehouseError
from composable_dagster.filters import CatalogSchema, compile_members
from composable_dagster.warehouse.activation import MembershipChange

NOT_EMPTY_CHECK = "not_empty"
DROP_CHECK = "member_count_drop"


@dataclass(frozen=True, slots=True)
class AudienceAssetSpec:
    """Everything one audience asset needs, resolved from the catalog at load time."""

    key: dg.AssetKey
    audience_id: str
    workspace_id: str
    name: str
    description: str
    group_name: str
    parent_model_id: str
    filter_tree: dict[str, Any]
    schema: CatalogSchema
    deps: Sequence[dg.AssetKey]
    kind: str
    max_member_drop: float
    # Row hashes of the syncs' mappings, stored with the membership so their diffs need
    # not read the parent model (sync/plan.py `membership_row_hash`): name -> columns.
    row_hashes: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


def build_audience_asset(spec: AudienceAssetSpec) -> dg.AssetsDefinition:
    """The audience's asset, with blocking checks that stop its syncs on a bad membership."""
    checks = [
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
            "previous materialization.",
        ),
    ]

    @dg.asset(
        key=spec.key,
        deps=list(spec.deps),
        group_name=spec.group_name,
        kinds={spec.kind, "audience"},
        description=f"**{spec.name}** (audience)\n\n{spec.description}".strip(),
        check_specs=checks,
        metadata={"composable/audience_id": spec.audience_id},
        tags={"composable/kind": "audience"},
    )
    def audience(
        context: dg.AssetExecutionContext, activation: ActivationStoreResource
    ) -> dg.MaterializeResult:
        started = time.monotonic()
        store = activation.store()
        compiled = compile_members(
            spec.filter_tree,
            parent_model_id=spec.parent_model_id,
            schema=spec.schema,
            now=datetime.now(UTC),  # the adapter reads the clock; the compiler never does
            dialect=store.dialect,
            audience_id=spec.audience_id,
            null_keys=True,  # counted and reported, never members
        )
        try:
            change = store.replace_members(
                audience_id=spec.audience_id,
                members=compiled.expression,
                row_hashes=spec.row_hashes,
            )
        except WarehouseError as err:
            # The engine's message without hints naming the activation store, or the run
            # timeout that cancelled the query. Not chained: Dagster stores an error's
            # causes with the run, and the engine's own text has those hints.
            raise dg.Failure(description=f"{spec.name}: {err}") from None
        duration = time.monotonic() - started
        context.log.info(
            f"{spec.name}: {change.member_count} members "
            f"(+{change.added or 0} / -{change.removed or 0}) in {duration:.2f} s"
        )
        if change.rows_without_key:
            context.log.warning(
                f"{spec.name}: {change.rows_without_key} matching rows have a NULL key; they "
                "are not members, and its syncs report them as failed rows"
            )
        return dg.MaterializeResult(
            metadata=membership_metadata(change, sql=compiled.sql, duration=duration),
            check_results=membership_checks(change, max_member_drop=spec.max_member_drop),
        )

    return audience


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
    change: MembershipChange, *, max_member_drop: float
) -> list[dg.AssetCheckResult]:
    drop = 0.0
    if change.previous_count:
        drop = max(0.0, 1 - change.member_count / change.previous_count)
    return [
        dg.AssetCheckResult(
            check_name=NOT_EMPTY_CHECK,
            passed=change.member_count > 0,
            metadata={"member_count": change.member_count},
        ),
        dg.AssetCheckResult(
            check_name=DROP_CHECK,
            passed=drop <= max_member_drop,
            metadata={
                "drop_share": round(drop, 4),
                "max_drop_share": max_member_drop,
                "previous_member_count": change.previous_count or 0,
            },
        ),
    ]
