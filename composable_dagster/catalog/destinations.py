"""Destinations: where syncs deliver. Config is validated by the destination type."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from composable_dagster.catalog.common import (
    Name,
    Spec,
    apply_changes,
    ensure_name_free,
    get_owned,
    list_owned,
)
from composable_dagster.catalog.tables import Destination, Sync
from composable_dagster.destinations import ConnectionCheck, destination_type
from composable_dagster.destinations.secrets import unmask_config
from composable_dagster.errors import ConflictError, InvalidInputError


class DestinationCreate(Spec):
    name: Name
    destination_type: str
    config: dict[str, Any]
    connection_id: str | None = None


class DestinationUpdate(Spec):
    name: Name | None = None
    config: dict[str, Any] | None = None
    connection_id: str | None = None


class DestinationTest(Spec):
    destination_type: str
    config: dict[str, Any]


def check_destination(spec: DestinationTest) -> ConnectionCheck:
    kind = destination_type(spec.destination_type)
    return kind.check_connection(kind.parse_config(spec.config))


def create_destination(
    session: Session, *, workspace_id: str, spec: DestinationCreate, created_by: str | None
) -> Destination:
    ensure_name_free(session, Destination, workspace_id=workspace_id, name=spec.name)
    kind = destination_type(spec.destination_type)
    config = kind.parse_config(spec.config)
    row = Destination(
        workspace_id=workspace_id,
        created_by=created_by,
        name=spec.name,
        destination_type=kind.name,
        config=config.model_dump(mode="json"),
        connection_id=spec.connection_id,
    )
    _record_check(row, kind.check_connection(config))
    session.add(row)
    session.flush()
    return row


def update_destination(
    session: Session, *, workspace_id: str, destination_id: str, spec: DestinationUpdate
) -> Destination:
    row = get_owned(session, Destination, workspace_id=workspace_id, row_id=destination_id)
    changes = spec.model_dump(exclude_unset=True)
    for field in ("name", "config"):
        if field in changes and changes[field] is None:
            raise InvalidInputError(field, "may not be null")
    if "name" in changes:
        ensure_name_free(
            session, Destination, workspace_id=workspace_id, name=changes["name"], exclude_id=row.id
        )
    if "config" in changes:
        kind = destination_type(row.destination_type)
        changes["config"] = unmask_config(kind.name, changes["config"], row.config)
        config = kind.parse_config(changes["config"])
        changes["config"] = config.model_dump(mode="json")
        _record_check(row, kind.check_connection(config))
    apply_changes(row, changes)
    return row


def recheck_destination(session: Session, *, workspace_id: str, destination_id: str) -> Destination:
    """Re-run the connection test of a stored destination and record its outcome."""
    row = get_owned(session, Destination, workspace_id=workspace_id, row_id=destination_id)
    kind = destination_type(row.destination_type)
    _record_check(row, kind.check_connection(kind.parse_config(row.config)))
    return row


def delete_destination(session: Session, *, workspace_id: str, destination_id: str) -> None:
    row = get_owned(session, Destination, workspace_id=workspace_id, row_id=destination_id)
    syncs = list_owned(session, Sync, workspace_id=workspace_id, destination_id=row.id)
    active = [s.name for s in syncs if s.status == "active"]
    if active:
        raise ConflictError(
            f"destination {row.name!r} is used by active syncs "
            f"({', '.join(map(repr, active[:5]))}); pause or delete them first"
        )
    for sync in syncs:
        session.delete(sync)  # paused/draft syncs cannot deliver without their destination
    session.flush()
    session.delete(row)


def list_destinations(session: Session, *, workspace_id: str) -> list[Destination]:
    return list_owned(session, Destination, workspace_id=workspace_id)


def destination_fields(row: Destination) -> dict[str, Any]:
    """What a sync may map to. File destinations take any field name (they write columns)."""
    kind = destination_type(row.destination_type)
    return {
        "destination_type": kind.name,
        "fields": [],
        "accepts_custom_fields": True,
        "supported_sync_modes": sorted(m.value for m in kind.capabilities.modes),
    }


def _record_check(row: Destination, check: ConnectionCheck) -> None:
    row.status = "connected" if check.ok else "error"
    row.status_error = "" if check.ok else check.message
