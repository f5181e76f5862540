"""What the filter language knows about the catalog: frozen value objects, no I/O.

The catalog package builds a `CatalogSchema` from its rows; the compiler and the
validators read only these values, so they stay pure and are tested without a database.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


class ColumnType(enum.StrEnum):
    """The operator families a warehouse column belongs to."""

    TEXT = "text"
    NUMBER = "number"
    BOOLEAN = "boolean"
    TIMESTAMP = "timestamp"  # dates are compared as timestamps
    OTHER = "other"  # lists, structs, blobs: only is_null / is_not_null apply


class EntityType(enum.StrEnum):
    PARENT = "parent"
    RELATED = "related"
    EVENT = "event"


class Cardinality(enum.StrEnum):
    ONE_TO_ONE = "one_to_one"
    ONE_TO_MANY = "one_to_many"
    MANY_TO_ONE = "many_to_one"
    MANY_TO_MANY = "many_to_many"


class TraitType(enum.StrEnum):
    AGGREGATION = "aggregation"
    OCCURRENCE = "occurrence"
    SQL = "sql"
    FORMULA = "formula"


class ResultType(enum.StrEnum):
    STRING = "string"
    NUMBER = "number"
    BOOLEAN = "boolean"
    DATE = "date"
    TIMESTAMP = "timestamp"


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    type: ColumnType
    warehouse_type: str = ""  # the engine's own spelling, e.g. VARCHAR, shown in previews
    nullable: bool = True


@dataclass(frozen=True, slots=True)
class ModelDef:
    """A model as the compiler sees it.

    Exactly one of `table` (``schema.table`` or ``table``) or `sql` names the rows.
    """

    id: str
    name: str
    entity_type: EntityType
    primary_key: str
    columns: Mapping[str, Column]
    table: str | None = None
    sql: str | None = None
    timestamp_column: str | None = None


@dataclass(frozen=True, slots=True)
class RelationshipDef:
    """A directed link `from_model.from_column = to_model.to_column`.

    For many-to-many links the rows are joined through a junction model:
    `from.from_column = junction.through_from_column` and
    `junction.through_to_column = to.to_column`.
    """

    id: str
    name: str
    from_model_id: str
    to_model_id: str
    from_column: str
    to_column: str
    cardinality: Cardinality
    through_model_id: str | None = None
    through_from_column: str | None = None
    through_to_column: str | None = None


@dataclass(frozen=True, slots=True)
class TraitDef:
    """A computed attribute: one value per parent entity. `config` is the raw JSON."""

    id: str
    name: str
    slug: str
    parent_model_id: str
    trait_type: TraitType
    result_type: ResultType
    config: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AudienceDef:
    id: str
    name: str
    parent_model_id: str
    filter_tree: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class CatalogSchema:
    """Everything of one workspace that a filter tree may reference, by id."""

    models: Mapping[str, ModelDef]
    relationships: Mapping[str, RelationshipDef] = field(default_factory=dict)
    traits: Mapping[str, TraitDef] = field(default_factory=dict)
    audiences: Mapping[str, AudienceDef] = field(default_factory=dict)
