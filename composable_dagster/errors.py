"""Typed domain errors. The core raises them; the API maps them to HTTP in one place."""

from __future__ import annotations


class DomainError(Exception):
    """Base of the errors a caller can act on. `str()` is the message shown to users."""


class NotFoundError(DomainError):
    def __init__(self, resource: str, resource_id: str) -> None:
        super().__init__(f"{resource} {resource_id!r} not found")
        self.resource = resource
        self.resource_id = resource_id


class InvalidInputError(DomainError):
    """Input that cannot be accepted; `field` is the JSON path at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class ConflictError(DomainError):
    """The request clashes with existing state (a duplicate name, a blocked delete)."""


class WarehouseError(DomainError):
    """The warehouse failed a query for reasons of its own (unreachable, out of memory, an
    internal error); the message is the engine's. Answered 502."""


class WarehouseRejectedError(WarehouseError):
    """The warehouse refused a query for what the query says (an unknown table or column, a
    bad cast, a value out of range, a sandbox refusal): the caller's input is at fault, so
    it is answered 400. `field` names the input the query came from."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
