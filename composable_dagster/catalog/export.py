"""The catalog as plain JSON rows, and back: what the definitions' graph is computed from
(catalog/graph.py), every workspace at once, in a deterministic order."""

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

# Timestamps are left out: nothing built from the export depends on them. Secrets are left
# out: nothing built from the export needs them (runs read them from the catalog).
_SKIPPED = frozenset(
    {"created_at", "updated_at", "estimated_at", "last_computed_at", "created_by", "secrets"}
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
    """Detached (never added to a session) rows of every workspace, ordered by id."""

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


def export_catalog(session: Session) -> dict[str, list[dict[str, Any]]]:
    """Every row the definitions need, as JSON-ready dicts, in a deterministic order."""
    export: dict[str, list[dict[str, Any]]] = {}
    for name, table in _TABLES.items():
        columns = [c for c in sa.inspect(table).columns if c.key not in _SKIPPED]
        rows = session.scalars(sa.select(table).order_by(table.id)).all()  # type: ignore[attr-defined]
        export[name] = [{c.key: getattr(row, c.key) for c in columns} for row in rows]
    return export


def rows_from_export(export: Mapping[str, Sequence[Mapping[str, Any]]]) -> CatalogRows:
    return CatalogRows(
        **{name: [table(**row) for row in export.get(name, [])] for name, table in _TABLES.items()}
    )
