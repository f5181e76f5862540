"""What every destination type declares: its config, its capabilities, a connection test."""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import pydantic

from composable_dagster.errors import InvalidInputError


class SyncMode(enum.StrEnum):
    ADD = "add"
    REMOVE = "remove"
    MIRROR = "mirror"
    UPSERT = "upsert"


@dataclass(frozen=True, slots=True)
class Capabilities:
    modes: frozenset[SyncMode]
    batch_size: int
    requests_per_second: float | None = None  # None: no rate limit of the destination's own


@dataclass(frozen=True, slots=True)
class ConnectionCheck:
    ok: bool
    message: str


class DestinationType(ABC):
    """One kind of destination. Subclasses are stateless; config arrives as validated models."""

    name: ClassVar[str]
    config_model: ClassVar[type[pydantic.BaseModel]]
    capabilities: ClassVar[Capabilities]

    def parse_config(self, raw: Mapping[str, Any]) -> pydantic.BaseModel:
        """Validate `raw`; errors name the field as `config.<field>`."""
        try:
            return self.config_model.model_validate(dict(raw))
        except pydantic.ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            field = f"config.{where}" if where else "config"
            raise InvalidInputError(field, first["msg"]) from err

    @abstractmethod
    def check_connection(self, config: pydantic.BaseModel) -> ConnectionCheck:
        """Reach the destination with `config` and say whether it accepts writes."""
