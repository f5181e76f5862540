"""What a filter tree depends on: ids for asset dependencies, columns for previews."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from composable_dagster.filters.errors import FilterError
from composable_dagster.filters.schema import CatalogSchema, TraitType
from composable_dagster.filters.tree import (
    AndNode,
    AudienceCondition,
    EventCondition,
    FilterNode,
    NotNode,
    OrNode,
    PropertyCondition,
    RelationCondition,
    TraitCondition,
    parse_filter_tree,
)


@dataclass(frozen=True, slots=True)
class ReferencedIds:
    """Catalog ids a tree uses. Without a schema only the ids written in the tree."""

    model_ids: frozenset[str] = frozenset()
    relationship_ids: frozenset[str] = frozenset()
    trait_ids: frozenset[str] = frozenset()
    audience_ids: frozenset[str] = frozenset()


def walk(node: FilterNode, *, nested: bool = True) -> Iterator[FilterNode]:
    """Every node of the tree, depth first; `nested=False` stays on the tree's own model.

    Iterative, so a tree built in Python past the parser's depth limit cannot overflow it.
    """
    stack = [node]
    while stack:
        current = stack.pop()
        yield current
        if isinstance(current, AndNode | OrNode | NotNode):
            stack.extend(reversed(current.children))
        elif nested and isinstance(current, RelationCondition | EventCondition):
            stack.extend([current.filters] if current.filters else [])


def property_columns(node: FilterNode) -> list[str]:
    """Columns of the tree's own model used by property conditions, first use first."""
    out: list[str] = []
    for n in walk(node, nested=False):
        if isinstance(n, PropertyCondition) and n.column not in out:
            out.append(n.column)
    return out


def trait_ids_in_order(node: FilterNode) -> list[str]:
    """Traits the tree's own model conditions use, first use first."""
    out: list[str] = []
    for n in walk(node, nested=False):
        if isinstance(n, TraitCondition) and n.trait_id not in out:
            out.append(n.trait_id)
    return out


def _as_tree(tree: FilterNode | Mapping[str, Any]) -> FilterNode:
    return parse_filter_tree(tree)


def referenced_ids(
    tree: FilterNode | Mapping[str, Any],
    *,
    parent_model_id: str | None = None,
    schema: CatalogSchema | None = None,
) -> ReferencedIds:
    """Ids of the relationships, traits, audiences (and models) a tree depends on.

    Args:
        tree: Parsed tree or its JSON.
        parent_model_id: Added to `model_ids` when given.
        schema: When given, dependencies are followed transitively: audiences' own trees,
            traits' relationships, filters and formula inputs, and every model reached
            (relationship ends and junctions). Unknown ids are kept but not followed.

    Raises:
        FilterError: The tree (or, with a schema, a referenced audience tree) is malformed.
    """
    models: set[str] = {parent_model_id} if parent_model_id else set()
    rels: set[str] = set()
    traits: set[str] = set()
    audiences: set[str] = set()
    pending: list[FilterNode] = [_as_tree(tree)]

    def add_trait(trait_id: str) -> None:
        if trait_id in traits:
            return
        traits.add(trait_id)
        trait = schema.traits.get(trait_id) if schema else None
        if trait is None:
            return
        models.add(trait.parent_model_id)
        config = trait.config if isinstance(trait.config, Mapping) else {}
        if isinstance(config.get("relationship_id"), str):
            rels.add(config["relationship_id"])
        if isinstance(config.get("filter"), Mapping):
            # An invalid trait is reported by validation, not here.
            with contextlib.suppress(FilterError):
                pending.append(parse_filter_tree(config["filter"]))
        if trait.trait_type == TraitType.FORMULA and schema is not None:
            text = str(config.get("expression", ""))
            for other in schema.traits.values():
                if other.parent_model_id == trait.parent_model_id and _mentions(text, other.slug):
                    add_trait(other.id)

    while pending:
        for node in walk(pending.pop()):
            if isinstance(node, RelationCondition | EventCondition):
                rels.add(node.relationship_id)
            elif isinstance(node, TraitCondition):
                add_trait(node.trait_id)
            elif isinstance(node, AudienceCondition) and node.audience_id not in audiences:
                audiences.add(node.audience_id)
                audience = schema.audiences.get(node.audience_id) if schema else None
                if audience is not None:
                    models.add(audience.parent_model_id)
                    pending.append(parse_filter_tree(audience.filter_tree))
    if schema is not None:
        for rel_id in rels:
            rel = schema.relationships.get(rel_id)
            if rel is not None:
                models.update({rel.from_model_id, rel.to_model_id})
                if rel.through_model_id:
                    models.add(rel.through_model_id)
    return ReferencedIds(
        model_ids=frozenset(models),
        relationship_ids=frozenset(rels),
        trait_ids=frozenset(traits),
        audience_ids=frozenset(audiences),
    )


def _mentions(text: str, slug: str) -> bool:
    return re.search(rf"(?<![\w]){re.escape(slug)}(?![\w])", text) is not None


def referenced_model_ids(
    tree: FilterNode | Mapping[str, Any], *, parent_model_id: str, schema: CatalogSchema
) -> frozenset[str]:
    """Every model whose rows the tree's SQL reads (parent, related, junction, via traits
    and nested audiences): the upstream assets of an audience."""
    return referenced_ids(tree, parent_model_id=parent_model_id, schema=schema).model_ids
