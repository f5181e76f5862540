"""The catalog as Dagster's definitions need it: the graph, without the content.

Keys (slugs), dependencies, groups, kinds, descriptions and schedules; no filter tree, no
mapping, no destination config. A run reads those from the catalog when it starts
(catalog/resolve.py), so an edit that leaves this graph as it was needs no reload, and the
graph is small enough to pin for run workers. `digest` tells whether a change altered it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session
from sqlglot import exp

from composable_dagster.catalog.export import CatalogRows, catalog_rows
from composable_dagster.catalog.schema_view import schema_from_rows
from composable_dagster.catalog.tables import Model
from composable_dagster.filters import FilterError, parse_filter_tree, referenced_ids
from composable_dagster.filters.user_sql import parse_select
from composable_dagster.spec.sync import valid_cron

TableName = tuple[str | None, str]  # (schema, table), lower case


@dataclass(frozen=True, slots=True)
class AudienceNode:
    id: str
    slug: str
    name: str
    description: str
    model_ids: tuple[str, ...]  # models whose rows its SQL reads (its upstream tables)
    audience_ids: tuple[str, ...]  # audiences it references


@dataclass(frozen=True, slots=True)
class SyncNode:
    id: str
    slug: str
    name: str
    description: str
    audience_id: str
    destination_type: str
    sync_mode: str
    schedule: str | None  # only a cron Dagster accepts: a stored odd one leaves it manual
    status: str


@dataclass(frozen=True, slots=True)
class WorkspaceGraph:
    id: str
    slug: str
    model_tables: Mapping[str, tuple[TableName, ...]]  # model id -> the tables it reads
    audiences: tuple[AudienceNode, ...]
    syncs: tuple[SyncNode, ...]


@dataclass(frozen=True, slots=True)
class CatalogGraph:
    workspaces: tuple[WorkspaceGraph, ...]

    def to_json(self) -> str:
        # What `asdict` gives, without its deep copy of every leaf (0.15 s at 1,000
        # audiences, paid by every reload): the nodes hold only strings and tuples.
        plain = {
            "workspaces": [
                {
                    **_fields(w),
                    "audiences": [_fields(a) for a in w.audiences],
                    "syncs": [_fields(s) for s in w.syncs],
                }
                for w in self.workspaces
            ]
        }
        return json.dumps(plain, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> CatalogGraph:
        raw = json.loads(text)
        return cls(
            workspaces=tuple(
                WorkspaceGraph(
                    id=w["id"],
                    slug=w["slug"],
                    model_tables={
                        m: tuple((t[0], t[1]) for t in tables)
                        for m, tables in w["model_tables"].items()
                    },
                    audiences=tuple(
                        AudienceNode(
                            id=a["id"],
                            slug=a["slug"],
                            name=a["name"],
                            description=a["description"],
                            model_ids=tuple(a["model_ids"]),
                            audience_ids=tuple(a["audience_ids"]),
                        )
                        for a in w["audiences"]
                    ),
                    syncs=tuple(SyncNode(**s) for s in w["syncs"]),
                )
                for w in raw["workspaces"]
            )
        )

    def digest(self) -> str:
        return self.digest_of(self.to_json())

    def shard(self, index: int, count: int) -> CatalogGraph:
        """The part of the graph code location `index` of `count` builds (`shards`)."""
        return self if count == 1 else self.shards(count)[index]

    def shards(self, count: int) -> tuple[CatalogGraph, ...]:
        """The graph split for `count` code locations: in each, the audiences whose group
        (see `audience_shards`) falls to it, their syncs, and the models they read. With
        one location, the whole graph."""
        if count == 1:
            return (self,)
        parts: list[list[WorkspaceGraph]] = [[] for _ in range(count)]
        for workspace in self.workspaces:
            shard_of_audience = audience_shards(workspace.audiences, count)
            for index, part in enumerate(parts):
                audiences = tuple(
                    a for a in workspace.audiences if shard_of_audience[a.id] == index
                )
                if not audiences:
                    continue
                kept = {a.id for a in audiences}
                used = {m for a in audiences for m in a.model_ids}
                part.append(
                    WorkspaceGraph(
                        id=workspace.id,
                        slug=workspace.slug,
                        model_tables={m: t for m, t in workspace.model_tables.items() if m in used},
                        audiences=audiences,
                        syncs=tuple(s for s in workspace.syncs if s.audience_id in kept),
                    )
                )
        return tuple(CatalogGraph(workspaces=tuple(part)) for part in parts)

    @staticmethod
    def digest_of(graph_json: str) -> str:
        """The digest of the graph whose `to_json` is `graph_json` (saves a second dump)."""
        return hashlib.sha256(graph_json.encode()).hexdigest()


def audience_shards(audiences: Sequence[AudienceNode], count: int) -> dict[str, int]:
    """The shard (0 to `count` - 1) of each audience of one workspace.

    A run materializes a sync with its audience and the audiences that one references, and
    a Dagster run runs in one code location: so audiences linked by references, directly
    or not, share a shard, and each sync goes with its audience. A group's shard is a hash
    of its smallest audience id: stable across reloads and processes, and spread evenly
    when, as usual, most audiences reference no other. A reference that joins two groups
    may move one of them to another shard; that is a graph change, which reloads both.
    """
    root = {a.id: a.id for a in audiences}

    def find(node: str) -> str:
        while root[node] != node:
            root[node] = root[root[node]]
            node = root[node]
        return node

    for audience in audiences:
        for referenced in audience.audience_ids:
            if referenced in root:
                low, high = sorted((find(audience.id), find(referenced)))
                root[high] = low  # the group's root is its smallest id
    return {a.id: shard_of(find(a.id), count) for a in audiences}


def shard_of(group_root: str, count: int) -> int:
    digest = hashlib.sha256(group_root.encode()).digest()
    return int.from_bytes(digest[:8], "big") % count


def _fields(node: AudienceNode | SyncNode | WorkspaceGraph) -> dict[str, Any]:
    return {name: getattr(node, name) for name in node.__dataclass_fields__}


def load_graph(session: Session, *, dialect: str) -> CatalogGraph:
    return graph_from_rows(catalog_rows(session), dialect=dialect)


def graph_from_rows(rows: CatalogRows, *, dialect: str) -> CatalogGraph:
    """The graph of every workspace in `rows`. Never fails on one bad row: a tree that no
    longer resolves depends on its parent model only, and fails its own materialization."""
    workspaces = []
    for workspace in rows.workspaces:
        models = rows.of_workspace(workspace.id, "models")
        audiences = rows.of_workspace(workspace.id, "audiences")
        schema = schema_from_rows(
            models=models,
            relationships=rows.of_workspace(workspace.id, "relationships"),
            traits=rows.of_workspace(workspace.id, "traits"),
            audiences=audiences,
        )
        destinations = {d.id: d for d in rows.of_workspace(workspace.id, "destinations")}
        audience_ids = {a.id for a in audiences}
        nodes = []
        for audience in audiences:
            try:
                tree = parse_filter_tree(audience.filter_tree)  # once for both questions
                model_ids = referenced_ids(
                    tree, parent_model_id=audience.parent_model_id, schema=schema
                ).model_ids
                # Direct references only: the ones further up are their upstreams' deps.
                used = referenced_ids(tree).audience_ids & audience_ids
            except FilterError:
                model_ids, used = frozenset({audience.parent_model_id}), frozenset()
            nodes.append(
                AudienceNode(
                    id=audience.id,
                    slug=audience.slug,
                    name=audience.name,
                    description=audience.description,
                    model_ids=tuple(sorted(model_ids)),
                    audience_ids=tuple(sorted(used)),
                )
            )
        syncs = [
            SyncNode(
                id=s.id,
                slug=s.slug,
                name=s.name,
                description=s.description,
                audience_id=s.audience_id,
                destination_type=destinations[s.destination_id].destination_type,
                sync_mode=s.sync_mode,
                schedule=s.schedule if s.schedule and valid_cron(s.schedule) else None,
                status=s.status,
            )
            for s in rows.of_workspace(workspace.id, "syncs")
            if s.audience_id in audience_ids and s.destination_id in destinations
        ]
        if not nodes:
            continue  # nothing of it is in Dagster: a new workspace or model needs no reload
        used = {m for node in nodes for m in node.model_ids}
        workspaces.append(
            WorkspaceGraph(
                id=workspace.id,
                slug=workspace.slug,
                model_tables={
                    m.id: model_tables(m, dialect=dialect) for m in models if m.id in used
                },
                audiences=tuple(nodes),
                syncs=tuple(syncs),
            )
        )
    return CatalogGraph(workspaces=tuple(workspaces))


def model_tables(model: Model, *, dialect: str) -> tuple[TableName, ...]:
    """The warehouse tables a model reads (its table, or its query's tables), lower case."""
    if model.model_type == "table" and model.source_table:
        names: Sequence[tuple[Any, str]] = [(model.source_schema, model.source_table)]
    else:
        try:
            # The one parser of workspace SQL: bounded, so no stored query can fail the load.
            parsed = parse_select(model.sql_query or "", dialect=dialect, field="sql_query")
        except FilterError:
            return ()  # its audiences fail at materialization, with the parser's reason
        names = [(t.db or None, t.name) for t in parsed.find_all(exp.Table)]
    return tuple(sorted({((s or "").lower() or None, t.lower()) for s, t in names}, key=str))
