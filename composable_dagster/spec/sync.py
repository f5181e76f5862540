"""A sync's spec: mode, field mapping, safety settings, split range and cron, resolved once.

Pure: catalog values in, frozen values (or an `InvalidInputError` naming the field) out.
The catalog calls `resolve_sync` to validate a write, and runs call it (through
`catalog/resolve.py`) to learn what to do, so the two can never disagree.
"""

from __future__ import annotations

import enum
import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import pydantic
from croniter import croniter

from composable_dagster.errors import InvalidInputError
from composable_dagster.filters import CatalogSchema
from composable_dagster.filters.schema import ModelDef

BUCKETS = 10_000  # split assignment granularity: 0.01%


class SyncMode(enum.StrEnum):
    ADD = "add"
    REMOVE = "remove"
    MIRROR = "mirror"
    UPSERT = "upsert"


# What each mode delivers, and what it records in the snapshot without delivering (remove
# mode must know who is in the audience to remove those who leave).
SENT: Mapping[SyncMode, frozenset[str]] = {
    SyncMode.ADD: frozenset({"add"}),
    SyncMode.REMOVE: frozenset({"remove"}),
    SyncMode.MIRROR: frozenset({"add", "update", "remove"}),
    SyncMode.UPSERT: frozenset({"add", "update"}),
}
RECORDED_UNSENT: Mapping[SyncMode, frozenset[str]] = {
    SyncMode.REMOVE: frozenset({"add", "update"}),
}


@dataclass(frozen=True, slots=True)
class MappedField:
    """One field of the mapping: where its value comes from and how it is delivered."""

    destination_field: str
    source_column: str
    column: str | None = None  # a parent-model column, or
    trait_id: str | None = None  # a trait's value
    pii: Literal["email", "phone"] | None = None  # normalise + SHA-256 before delivery


@dataclass(frozen=True, slots=True)
class SplitRange:
    """The members of one split group: bucket(split_id, key) in [low, high)."""

    split_id: str
    low: int
    high: int


class SafetyConfig(pydantic.BaseModel):
    """The safety settings a sync's `config` may override."""

    model_config = pydantic.ConfigDict(extra="ignore", frozen=True)

    allow_empty_mirror: bool = False
    max_remove_share: float = pydantic.Field(default=0.5, ge=0, le=1)
    batch_size: int | None = pydantic.Field(default=None, ge=1, le=1_000_000)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> SafetyConfig:
        try:
            return cls.model_validate(config)
        except pydantic.ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise InvalidInputError(f"config.{where}", first["msg"]) from err


class SyncValues(Protocol):
    """The stored values of a sync (a catalog row, or anything shaped like one)."""

    id: str
    audience_id: str
    destination_id: str
    sync_mode: str
    field_mapping: list[dict[str, Any]]
    config: dict[str, Any]
    schedule: str | None
    split_group_id: str | None


class SplitGroupValues(Protocol):
    id: str
    split_id: str
    percentage: float
    position: int


@dataclass(frozen=True, slots=True)
class SyncSpec:
    """Everything a run of the sync does, apart from the destination's own config."""

    sync_id: str
    audience_id: str
    destination_id: str
    mode: SyncMode
    fields: tuple[MappedField, ...]
    safety: SafetyConfig
    split: SplitRange | None
    schedule: str | None  # a cron Dagster can schedule; None: manual only


def resolve_sync(
    sync: SyncValues,
    *,
    parent: ModelDef,
    schema: CatalogSchema,
    destination_type: str,
    supported_modes: frozenset[SyncMode],
    split_groups: Sequence[SplitGroupValues],
    hashed_fields: Mapping[str, str],
) -> SyncSpec:
    """The sync as a run performs it. `split_groups`: every group of the split that the
    sync's `split_group_id` belongs to (empty without one)."""
    mode = SyncMode(sync.sync_mode)
    if mode not in supported_modes:
        supported = ", ".join(sorted(m.value for m in supported_modes))
        raise InvalidInputError(
            "sync_mode",
            f"destination type {destination_type!r} does not support {sync.sync_mode!r} "
            f"(it supports {supported})",
        )
    if sync.schedule is not None and not valid_cron(sync.schedule):
        raise InvalidInputError(
            "schedule", f"{sync.schedule!r} is not a 5-field cron expression (e.g. '0 */4 * * *')"
        )
    fields = resolve_field_mapping(
        sync.field_mapping, parent=parent, schema=schema, hashed_fields=hashed_fields
    )
    safety = SafetyConfig.from_config(sync.config)
    split = None
    if sync.split_group_id is not None:
        ranges = split_ranges(
            split_groups[0].split_id if split_groups else "",
            [GroupShare(g.id, g.percentage, g.position) for g in split_groups],
        )
        if sync.split_group_id not in ranges:
            raise InvalidInputError(
                "split_group_id", f"split group {sync.split_group_id!r} not found"
            )
        split = ranges[sync.split_group_id]
    return SyncSpec(
        sync_id=sync.id,
        audience_id=sync.audience_id,
        destination_id=sync.destination_id,
        mode=mode,
        fields=tuple(fields),
        safety=safety,
        split=split,
        schedule=sync.schedule,
    )


def resolve_field_mapping(
    mapping: Sequence[Mapping[str, Any]],
    *,
    parent: ModelDef,
    schema: CatalogSchema,
    hashed_fields: Mapping[str, str],
    path: str = "field_mapping",
) -> list[MappedField]:
    """Check a sync's field_mapping against the parent model and its traits.

    A source is a parent-model column, or else the slug of a trait of that model.
    """
    if not mapping:
        raise InvalidInputError(path, "map at least one field")
    traits = {t.slug: t for t in schema.traits.values() if t.parent_model_id == parent.id}
    fields, seen = [], set()
    for i, item in enumerate(mapping):
        where = f"{path}[{i}]"
        source, target = item.get("source_column"), item.get("destination_field")
        if not isinstance(source, str) or not source:
            raise InvalidInputError(f"{where}.source_column", "required (a column or trait)")
        if not isinstance(target, str) or not target:
            raise InvalidInputError(f"{where}.destination_field", "required")
        if target in seen:
            raise InvalidInputError(f"{where}.destination_field", f"{target!r} is mapped twice")
        seen.add(target)
        pii = item.get("hash") or hashed_fields.get(target)
        if pii not in (None, "email", "phone"):
            raise InvalidInputError(f"{where}.hash", "one of 'email' or 'phone'")
        if source in parent.columns:
            fields.append(MappedField(target, source, column=source, pii=pii))
        elif source in traits:
            fields.append(MappedField(target, source, trait_id=traits[source].id, pii=pii))
        else:
            raise InvalidInputError(
                f"{where}.source_column",
                f"{source!r} is neither a column of model {parent.name} nor one of its traits",
            )
    return fields


@dataclass(frozen=True, slots=True)
class GroupShare:
    group_id: str
    percentage: float
    position: int


def split_ranges(split_id: str, groups: Sequence[GroupShare]) -> dict[str, SplitRange]:
    """Each group's [low, high) bucket range, in position order; together they cover all
    buckets exactly once, so the groups never overlap and every member has one group."""
    ranges, total = {}, 0.0
    ordered = sorted(groups, key=lambda g: g.position)
    for i, group in enumerate(ordered):
        low = round(total * BUCKETS / 100)
        total += group.percentage
        high = BUCKETS if i == len(ordered) - 1 else round(total * BUCKETS / 100)
        ranges[group.group_id] = SplitRange(split_id=split_id, low=low, high=high)
    return ranges


# Cron syntax Dagster's own (vendored, older) croniter rejects though ours accepts it:
# nearest weekday (`15W`, `LW`), `?` and the Jenkins hash `H` (`H`, `H/15`, `H(0-29)`).
_CRON_UNSUPPORTED = re.compile(r"[\dlL][wW]\b|\?|(?:^|[\s,])[hH](?=$|[\s,/(])")


@functools.lru_cache(maxsize=4096)  # croniter's expand is ~0.4 ms; syncs share few crons
def valid_cron(schedule: str) -> bool:
    """Whether Dagster can schedule `schedule`: five fields, syntax its croniter knows, and a
    day that exists (Dagster refuses February 30 and 31 outright, failing the whole code
    location's load). Kept apart from Dagster: the API's validation must not import it."""
    fields = schedule.split()
    if len(fields) != 5 or _CRON_UNSUPPORTED.search(schedule) or not croniter.is_valid(schedule):
        return False
    try:
        expanded = croniter.expand(schedule)[0]
    except (ValueError, KeyError):
        return False
    days, months = expanded[2], expanded[3]
    return not (months == [2] and len(days) == 1 and days[0] in (30, 31))
