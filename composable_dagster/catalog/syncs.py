"""Syncs: an audience delivered to a destination with a mode, a mapping and a schedule.

Runs are not stored here: they live in Dagster's run storage (see api/runs.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any, Literal

import pydantic
import sqlalchemy as sa
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
from composable_dagster.catalog.db import catalog_engine
from composable_dagster.catalog.resolve import sync_spec
from composable_dagster.catalog.schema_view import load_schema
from composable_dagster.catalog.tables import Audience, Destination, SplitGroup, Sync
from composable_dagster.errors import InvalidInputError, NotFoundError
from composable_dagster.spec.sync import SyncMode

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


@contextmanager
def trigger_lock(catalog_url: str, sync_id: str) -> Iterator[None]:
    """Hold while deciding whether to launch a run of the sync, and launching it: two
    triggers at once (from any API process) then launch one run, not two. A row lock on
    PostgreSQL; SQLite's write lock (a few hundred milliseconds). Its own transaction, begun
    with the write, so SQLite waits for the lock instead of failing a stale read snapshot."""
    with catalog_engine(catalog_url).begin() as conn:
        conn.execute(sa.update(Sync).where(Sync.id == sync_id).values(updated_at=Sync.updated_at))
        yield


def list_syncs(
    session: Session, *, workspace_id: str, audience_id: str | None = None
) -> list[Sync]:
    filters = {} if audience_id is None else {"audience_id": audience_id}
    return list_owned(session, Sync, workspace_id=workspace_id, **filters)


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
    """Its references are its own workspace's; then it resolves as its runs will."""
    for field, table, row_id in (
        ("audience_id", Audience, row.audience_id),
        ("destination_id", Destination, row.destination_id),
    ):
        try:
            get_owned(session, table, workspace_id=row.workspace_id, row_id=row_id)
        except NotFoundError as err:
            raise InvalidInputError(field, str(err)) from err
    if row.split_group_id is not None:
        group = session.get(SplitGroup, row.split_group_id)
        if group is None or group.workspace_id != row.workspace_id:
            raise InvalidInputError(
                "split_group_id", f"split group {row.split_group_id!r} not found"
            )
        if group.audience_id != row.audience_id:
            raise InvalidInputError("split_group_id", "the split group belongs to another audience")
    sync_spec(session, row, schema=load_schema(session, workspace_id=row.workspace_id))
