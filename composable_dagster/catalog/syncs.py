"""Syncs: an audience delivered to a destination with a mode, a mapping and a schedule.

Runs are not stored here: they live in Dagster's run storage (see api/runs.py).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import pydantic
from croniter import croniter
from sqlalchemy.orm import Session

from composable_dagster.catalog.common import (
    MAX_NAME_LENGTH,
    Description,
    Name,
    Spec,
    apply_changes,
    ensure_name_free,
    get_owned,
    list_owned,
    unique_slug,
)
from composable_dagster.catalog.schema_view import load_schema
from composable_dagster.catalog.tables import Audience, Destination, SplitGroup, Sync
from composable_dagster.destinations import destination_type
from composable_dagster.destinations.pii import HASHED_FIELDS
from composable_dagster.errors import InvalidInputError, NotFoundError
from composable_dagster.sync.engine import SafetyConfig
from composable_dagster.sync.plan import SyncMode, resolve_field_mapping

SettableStatus = Literal["draft", "active", "paused"]


class FieldMappingItem(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    source_column: str = pydantic.Field(min_length=1, max_length=MAX_NAME_LENGTH)
    destination_field: str = pydantic.Field(min_length=1, max_length=MAX_NAME_LENGTH)
    hash: Literal["email", "phone"] | None = None


# A 5-field cron expression, stored in a column of this width.
Schedule = Annotated[str, pydantic.StringConstraints(max_length=120)]


class SyncCreate(Spec):
    name: Name
    description: Description = ""
    audience_id: str
    destination_id: str
    field_mapping: list[FieldMappingItem]
    sync_mode: SyncMode
    schedule: Schedule | None = None
    config: dict[str, Any] = {}
    split_group_id: str | None = None
    status: SettableStatus = "active"


class SyncUpdate(Spec):
    name: Name | None = None
    description: Description | None = None
    audience_id: str | None = None
    destination_id: str | None = None
    field_mapping: list[FieldMappingItem] | None = None
    sync_mode: SyncMode | None = None
    schedule: Schedule | None = None
    config: dict[str, Any] | None = None
    split_group_id: str | None = None
    status: SettableStatus | None = None


_NOT_NULL = ("name", "description", "audience_id", "destination_id", "field_mapping",
             "sync_mode", "config", "status")  # fmt: skip


def create_sync(
    session: Session, *, workspace_id: str, spec: SyncCreate, created_by: str | None
) -> Sync:
    ensure_name_free(session, Sync, workspace_id=workspace_id, name=spec.name)
    row = Sync(
        workspace_id=workspace_id,
        created_by=created_by,
        slug=unique_slug(session, Sync, workspace_id=workspace_id, name=spec.name),
        status_error="",
        **_stored(spec.model_dump()),
    )
    _validate(session, row)
    session.add(row)
    session.flush()
    return row


def update_sync(session: Session, *, workspace_id: str, sync_id: str, spec: SyncUpdate) -> Sync:
    row = get_owned(session, Sync, workspace_id=workspace_id, row_id=sync_id)
    changes = spec.model_dump(exclude_unset=True)
    for field in _NOT_NULL:
        if field in changes and changes[field] is None:
            raise InvalidInputError(field, "may not be null")
    if "name" in changes:
        ensure_name_free(
            session, Sync, workspace_id=workspace_id, name=changes["name"], exclude_id=row.id
        )
    apply_changes(row, _stored(changes))
    _validate(session, row)
    return row


def delete_sync(session: Session, *, workspace_id: str, sync_id: str) -> None:
    session.delete(get_owned(session, Sync, workspace_id=workspace_id, row_id=sync_id))


def list_syncs(
    session: Session, *, workspace_id: str, audience_id: str | None = None
) -> list[Sync]:
    filters = {} if audience_id is None else {"audience_id": audience_id}
    return list_owned(session, Sync, workspace_id=workspace_id, **filters)


# Cron syntax Dagster's own (vendored, older) croniter rejects though ours accepts it:
# nearest weekday (`15W`, `LW`), `?` and the Jenkins hash `H` (`H`, `H/15`, `H(0-29)`).
_CRON_UNSUPPORTED = re.compile(r"[\dlL][wW]\b|\?|(?:^|[\s,])[hH](?=$|[\s,/(])")


def valid_cron(schedule: str) -> bool:
    """Whether Dagster can schedule `schedule`: five fields, syntax its croniter knows, and a
    day that exists (Dagster refuses February 30 and 31 outright, failing the whole code
    location's load). Kept beside the API's validation, which must not import Dagster."""
    fields = schedule.split()
    if len(fields) != 5 or _CRON_UNSUPPORTED.search(schedule) or not croniter.is_valid(schedule):
        return False
    try:
        expanded = croniter.expand(schedule)[0]
    except (ValueError, KeyError):
        return False
    days, months = expanded[2], expanded[3]
    return not (months == [2] and len(days) == 1 and days[0] in (30, 31))


def _stored(values: dict[str, Any]) -> dict[str, Any]:
    if values.get("schedule") is not None and not values["schedule"].strip():
        values["schedule"] = None  # an empty schedule means manual only
    if values.get("field_mapping") is not None:
        values["field_mapping"] = [
            {k: v for k, v in dict(item).items() if v is not None}
            for item in values["field_mapping"]
        ]
    if "sync_mode" in values and values["sync_mode"] is not None:
        values["sync_mode"] = str(values["sync_mode"])
    return values


def _validate(session: Session, row: Sync) -> None:
    try:
        audience = get_owned(
            session, Audience, workspace_id=row.workspace_id, row_id=row.audience_id
        )
    except NotFoundError as err:
        raise InvalidInputError("audience_id", str(err)) from err
    try:
        destination = get_owned(
            session, Destination, workspace_id=row.workspace_id, row_id=row.destination_id
        )
    except NotFoundError as err:
        raise InvalidInputError("destination_id", str(err)) from err
    kind = destination_type(destination.destination_type)
    if SyncMode(row.sync_mode) not in kind.capabilities.modes:
        supported = ", ".join(sorted(m.value for m in kind.capabilities.modes))
        raise InvalidInputError(
            "sync_mode",
            f"destination type {kind.name!r} does not support {row.sync_mode!r} "
            f"(it supports {supported})",
        )
    if row.schedule is not None and not valid_cron(row.schedule):
        raise InvalidInputError(
            "schedule", f"{row.schedule!r} is not a 5-field cron expression (e.g. '0 */4 * * *')"
        )
    schema = load_schema(session, workspace_id=row.workspace_id)
    resolve_field_mapping(
        row.field_mapping,
        parent=schema.models[audience.parent_model_id],
        schema=schema,
        hashed_fields=HASHED_FIELDS,
    )
    SafetyConfig.from_config(row.config)
    if row.split_group_id is not None:
        group = session.get(SplitGroup, row.split_group_id)
        if group is None or group.workspace_id != row.workspace_id:
            raise InvalidInputError(
                "split_group_id", f"split group {row.split_group_id!r} not found"
            )
        if group.audience_id != row.audience_id:
            raise InvalidInputError("split_group_id", "the split group belongs to another audience")
