"""The filter language: parse, validate and compile audience filter trees to SQL.

Pure: imports only pydantic, sqlglot and the stdlib; no I/O, no clock (``now`` is an
argument), no environment. See docs/filters.md for the semantics.
"""

from composable_dagster.filters.compile import (
    DIALECTS,
    MAX_PREVIEW_ROWS,
    PARENT_ALIAS,
    CompiledQuery,
    compile_count,
    compile_members,
    compile_preview,
    compile_trait_values,
    validate_filter_tree,
    validate_trait,
)
from composable_dagster.filters.errors import FilterCycleError, FilterError
from composable_dagster.filters.operators import OPERATORS, OperatorSpec, ValueShape
from composable_dagster.filters.refs import ReferencedIds, referenced_ids, referenced_model_ids
from composable_dagster.filters.schema import (
    AudienceDef,
    Cardinality,
    CatalogSchema,
    Column,
    ColumnType,
    EntityType,
    ModelDef,
    RelationshipDef,
    ResultType,
    TraitDef,
    TraitType,
)
from composable_dagster.filters.tree import (
    AndNode,
    AudienceCondition,
    EventCondition,
    FilterNode,
    NotNode,
    OrNode,
    PropertyCondition,
    RelationCondition,
    TimeWindow,
    TraitCondition,
    dump_filter_tree,
    parse_filter_tree,
)

__all__ = [
    "DIALECTS",
    "MAX_PREVIEW_ROWS",
    "OPERATORS",
    "PARENT_ALIAS",
    "AndNode",
    "AudienceCondition",
    "AudienceDef",
    "Cardinality",
    "CatalogSchema",
    "Column",
    "ColumnType",
    "CompiledQuery",
    "EntityType",
    "EventCondition",
    "FilterCycleError",
    "FilterError",
    "FilterNode",
    "ModelDef",
    "NotNode",
    "OperatorSpec",
    "OrNode",
    "PropertyCondition",
    "ReferencedIds",
    "RelationCondition",
    "RelationshipDef",
    "ResultType",
    "TimeWindow",
    "TraitCondition",
    "TraitDef",
    "TraitType",
    "ValueShape",
    "compile_count",
    "compile_members",
    "compile_preview",
    "compile_trait_values",
    "dump_filter_tree",
    "parse_filter_tree",
    "referenced_ids",
    "referenced_model_ids",
    "validate_filter_tree",
    "validate_trait",
]
