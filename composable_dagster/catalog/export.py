"""The catalog's rows of every workspace at once, in a deterministic order: what the
definitions' graph is computed from (catalog/graph.py)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from composable_dagster.catalog.tables import (
    Audience,
    Base,
    Destination,
    Model,
    Relationship,
    SplitGroup,
    Sync,
    Trait,
    Workspace,
)

_TABLES: Mapping[str, type[Base]] = {
    "workspaces": Workspace,
    "models": Model,
    "relationships": Relationship,
    "traits": Trait,
    "audiences": Audience,
    "destinations": Destination,
    "split_groups": SplitGroup,
    "syncs": Sync,
}


@dataclass(frozen=True, slots=True)
class CatalogRows:
    """Rows of every workspace, ordered by id."""

    workspaces: Sequence[Workspace]
    models: Sequence[Model]
    relationships: Sequence[Relationship]
    traits: Sequence[Trait]
    audiences: Sequence[Audience]
    destinations: Sequence[Destination]
    split_groups: Sequence[SplitGroup]
    syncs: Sequence[Sync]

    def of_workspace(self, workspace_id: str, kind: str) -> list[Any]:
        return [row for row in getattr(self, kind) if row.workspace_id == workspace_id]


def catalog_rows(session: Session) -> CatalogRows:
    """Every workspace's rows the definitions' graph is computed from, ordered by id."""
    return CatalogRows(
        **{
            name: list(session.scalars(sa.select(table).order_by(table.id)))  # type: ignore[attr-defined]
            for name, table in _TABLES.items()
        }
    )
