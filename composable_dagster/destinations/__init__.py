"""Destination types: the registry the catalog validates configs and modes against."""

from composable_dagster.destinations.base import (
    Capabilities,
    ConnectionCheck,
    Connector,
    DeliveryError,
    DeliveryResult,
    DestinationScope,
    DestinationType,
    Operation,
    RecordBatch,
    SyncContext,
)
from composable_dagster.destinations.file import FileDestination
from composable_dagster.destinations.postgres import PostgresDestination
from composable_dagster.destinations.webhook import WebhookDestination
from composable_dagster.errors import InvalidInputError
from composable_dagster.spec.sync import SyncMode

DESTINATION_TYPES: dict[str, DestinationType] = {
    t.name: t for t in (FileDestination(), PostgresDestination(), WebhookDestination())
}


def destination_type(name: str, *, field: str = "destination_type") -> DestinationType:
    """The registered type called `name`, or an InvalidInputError naming `field`."""
    try:
        return DESTINATION_TYPES[name]
    except KeyError:
        known = ", ".join(sorted(DESTINATION_TYPES))
        raise InvalidInputError(
            field, f"unknown destination type {name!r} (known: {known})"
        ) from None


__all__ = [
    "DESTINATION_TYPES",
    "Capabilities",
    "ConnectionCheck",
    "Connector",
    "DeliveryError",
    "DeliveryResult",
    "DestinationScope",
    "DestinationType",
    "Operation",
    "RecordBatch",
    "SyncContext",
    "SyncMode",
    "destination_type",
]
