"""Destinations: where syncs deliver. Config is validated by the destination type.

A destination row keeps its config in two parts: `config`, the config with every secret
masked (what the API shows and what Dagster's definitions may carry), and `secrets`, the
secrets encrypted with the catalog's key (catalog/secret_box.py). `destination_config` puts
them together for a connection test or a run; nothing else ever sees a secret.

Secrets are write-only and stay with the place they were entered for: a client may send the
mask back to keep a stored secret, but not while changing where the destination points
(`DestinationType.target`), or the stored secret would be sent to the new place.
"""

from __future__ import annotations

from typing import Any

import pydantic
import sqlalchemy as sa
from sqlalchemy.orm import Session

from composable_dagster.catalog.common import (
    Name,
    Spec,
    apply_changes,
    ensure_name_free,
    get_owned,
    list_owned,
)
from composable_dagster.catalog.secret_box import SecretBox
from composable_dagster.catalog.tables import Destination, Sync
from composable_dagster.destinations import (
    ConnectionCheck,
    DestinationScope,
    DestinationType,
    destination_type,
)
from composable_dagster.destinations.secrets import (
    MASK,
    describe_path,
    join_secrets,
    masked_paths,
    split_secrets,
)
from composable_dagster.errors import ConflictError, InvalidInputError


class DestinationCreate(Spec):
    name: Name
    destination_type: str = pydantic.Field(max_length=64)
    config: dict[str, Any]
    connection_id: str | None = pydantic.Field(default=None, max_length=36)


class DestinationUpdate(Spec):
    name: Name | None = None
    config: dict[str, Any] | None = None
    connection_id: str | None = pydantic.Field(default=None, max_length=36)


class DestinationTest(Spec):
    destination_type: str = pydantic.Field(max_length=64)
    config: dict[str, Any]


def check_destination(spec: DestinationTest, *, scope: DestinationScope) -> ConnectionCheck:
    """Test an unsaved config (nothing is written outside the workspace's export root)."""
    kind = destination_type(spec.destination_type)
    _refuse_masks(kind, spec.config)
    return kind.check_connection(kind.parse_config(spec.config, scope=scope))


def create_destination(
    session: Session,
    *,
    workspace_id: str,
    spec: DestinationCreate,
    created_by: str | None,
    scope: DestinationScope,
    box: SecretBox,
) -> Destination:
    ensure_name_free(session, Destination, workspace_id=workspace_id, name=spec.name)
    kind = destination_type(spec.destination_type)
    _refuse_masks(kind, spec.config)
    config = kind.parse_config(spec.config, scope=scope)
    row = Destination(
        workspace_id=workspace_id,
        created_by=created_by,
        name=spec.name,
        destination_type=kind.name,
        connection_id=spec.connection_id,
    )
    _store_config(row, kind, config, box=box)
    _record_check(row, kind.check_connection(config))
    session.add(row)
    session.flush()
    return row


def update_destination(
    session: Session,
    *,
    workspace_id: str,
    destination_id: str,
    spec: DestinationUpdate,
    scope: DestinationScope,
    box: SecretBox,
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
        config = _updated_config(row, kind, changes.pop("config"), scope=scope, box=box)
        _store_config(row, kind, config, box=box)
        _record_check(row, kind.check_connection(config))
    apply_changes(row, changes)
    return row


def destination_config(
    row: Destination, *, scope: DestinationScope, box: SecretBox
) -> tuple[DestinationType, pydantic.BaseModel]:
    """The destination's type and its whole config, secrets included, validated in `scope`
    (for a connection test or a run; never shown, never handed to Dagster's storage)."""
    kind = destination_type(row.destination_type)
    full, _filled = join_secrets(kind, row.config, box.open(row.secrets))
    return kind, kind.parse_config(full, scope=scope)


def recheck_destination(
    session: Session,
    *,
    workspace_id: str,
    destination_id: str,
    scope: DestinationScope,
    box: SecretBox,
) -> Destination:
    """Re-run the connection test of a stored destination and record its outcome."""
    row = get_owned(session, Destination, workspace_id=workspace_id, row_id=destination_id)
    kind, config = destination_config(row, scope=scope, box=box)
    _record_check(row, kind.check_connection(config))
    return row


def rotate_secrets(session: Session, *, box: SecretBox) -> int:
    """Re-encrypt every stored secret with the box's first key; the number of destinations."""
    rows = session.scalars(sa.select(Destination).where(Destination.secrets.is_not(None))).all()
    for row in rows:
        row.secrets = box.rotate(row.secrets)
    return len(rows)


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


def _updated_config(
    row: Destination,
    kind: DestinationType,
    new: dict[str, Any],
    *,
    scope: DestinationScope,
    box: SecretBox,
) -> pydantic.BaseModel:
    """The config a PUT asks for, with masks sent back standing for the stored secrets.

    A stored secret is reused only while the destination still points where it did: the
    secret was entered for that place, and a changed URL or host with the mask sent back
    would otherwise hand it to whoever runs the new one.
    """
    merged, reused = join_secrets(kind, new, box.open(row.secrets))
    _refuse_masks(kind, merged)
    config = kind.parse_config(merged, scope=scope)
    if reused:
        try:
            _kind, stored = destination_config(row, scope=scope, box=box)
            same_place = kind.target(stored) == kind.target(config)
        except InvalidInputError:
            same_place = False  # the stored config no longer validates: trust nothing of it
        if not same_place:
            raise InvalidInputError(
                describe_path(reused[0]),
                "re-enter the secret when the target changes: the destination now points "
                "somewhere else, and a stored secret is only sent where it was entered for",
            )
    return config


def _refuse_masks(kind: DestinationType, config: dict[str, Any]) -> None:
    """A mask where no stored secret can stand in for it is a mistake of the client's."""
    masked = masked_paths(kind, config)
    if masked:
        raise InvalidInputError(
            describe_path(masked[0]),
            f"{MASK!r} is the mask of a secret, and there is no stored secret to keep here; "
            "send the real value",
        )


def _store_config(
    row: Destination, kind: DestinationType, config: pydantic.BaseModel, *, box: SecretBox
) -> None:
    public, secrets = split_secrets(kind, config.model_dump(mode="json"))
    row.config = public
    row.secrets = box.seal(secrets)


def _record_check(row: Destination, check: ConnectionCheck) -> None:
    row.status = "connected" if check.ok else "error"
    row.status_error = "" if check.ok else check.message
