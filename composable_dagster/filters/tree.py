"""The filter tree as typed, immutable values (pydantic v2).

Nodes are discriminated on ``type`` (``and``/``or``/``not``/``condition``) and conditions on
``condition_type``. Shape is checked here; meaning (columns, operators, ids) in `validate`.
Unknown keys are ignored so trees saved by other clients (UI ids, labels) still load.

Before pydantic sees a document, `check_tree_limits` walks it without recursion: parsing,
validation, compilation and SQL rendering all recurse once per level, so a tree over the
limits below is refused with its path before any of them runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from composable_dagster.filters.errors import FilterError, join_path

# Audience builders need a handful of levels; these leave room and keep every recursive pass
# (pydantic, the compiler, sqlglot's generator, the engines' parsers) far from their limits.
MAX_TREE_DEPTH = 32  # levels of nodes: the root is level 1, each group or `filters` adds one
MAX_TREE_NODES = 1000  # groups and conditions, nested relation/event filters included
# Each relation, event or trait condition is a subquery; engines plan hundreds of them in
# one statement superlinearly (200 took DuckDB 4 s on empty tables, 1000 PostgreSQL 56 s).
# Counted by the compiler, referenced audiences included.
MAX_TREE_SUBQUERIES = 100
# JSON nesting inside one node: values are scalars or lists of them, UI metadata is shallow.
MAX_VALUE_NESTING = 8


class FilterLimitError(FilterError):
    """A tree over MAX_TREE_DEPTH levels, MAX_TREE_NODES nodes or MAX_TREE_SUBQUERIES
    relation, event and trait conditions, counted with referenced audiences inlined."""


_CONFIG = ConfigDict(frozen=True, extra="ignore", strict=False)

CountOperator = Literal["at_least", "at_most", "exactly", "between"]
Quantifier = Literal["any", "all", "none"]
TimeUnit = Literal["hours", "days", "weeks", "months"]
TimeWindowType = Literal["within", "not_within", "before", "after", "between"]
# A JSON scalar or list of scalars; the operator table decides which shape is right.
Value = Any


class AndNode(BaseModel):
    model_config = _CONFIG
    type: Literal["and"]
    children: tuple[FilterNode, ...] = ()


class OrNode(BaseModel):
    model_config = _CONFIG
    type: Literal["or"]
    children: tuple[FilterNode, ...] = ()


class NotNode(BaseModel):
    model_config = _CONFIG
    type: Literal["not"]
    children: tuple[FilterNode, ...]

    @field_validator("children")
    @classmethod
    def _exactly_one(cls, v: tuple[FilterNode, ...]) -> tuple[FilterNode, ...]:
        if len(v) != 1:
            raise ValueError(f"a 'not' group needs exactly one child, got {len(v)}")
        return v

    @property
    def child(self) -> FilterNode:
        return self.children[0]


class PropertyCondition(BaseModel):
    model_config = _CONFIG
    type: Literal["condition"]
    condition_type: Literal["property"]
    column: str
    operator: str
    value: Value = None
    value2: Value = None


class TraitCondition(BaseModel):
    model_config = _CONFIG
    type: Literal["condition"]
    condition_type: Literal["trait"]
    trait_id: str
    operator: str
    value: Value = None
    value2: Value = None


class TimeWindow(BaseModel):
    model_config = _CONFIG
    type: TimeWindowType
    # An amount of `unit`s before now, or an ISO-8601 timestamp for absolute bounds.
    value: int | str
    unit: TimeUnit = "days"
    value2: int | str | None = None


class RelationCondition(BaseModel):
    model_config = _CONFIG
    type: Literal["condition"]
    condition_type: Literal["relation"]
    relationship_id: str
    quantifier: Quantifier = "any"
    count_operator: CountOperator = "at_least"
    count_value: int = 1
    count_value2: int | None = None
    filters: FilterNode | None = None


class EventCondition(BaseModel):
    model_config = _CONFIG
    type: Literal["condition"]
    condition_type: Literal["event"]
    relationship_id: str
    count_operator: CountOperator = "at_least"
    count_value: int = 1
    count_value2: int | None = None
    filters: FilterNode | None = None
    time_window: TimeWindow | None = None


class AudienceCondition(BaseModel):
    model_config = _CONFIG
    type: Literal["condition"]
    condition_type: Literal["audience"]
    audience_id: str
    operator: Literal["is_member", "is_not_member"] = "is_member"


Condition = Annotated[
    PropertyCondition | TraitCondition | RelationCondition | EventCondition | AudienceCondition,
    Field(discriminator="condition_type"),
]
FilterNode = Annotated[AndNode | OrNode | NotNode | Condition, Field(discriminator="type")]
GroupNode = AndNode | OrNode | NotNode

for _model in (AndNode, OrNode, NotNode, RelationCondition, EventCondition):
    _model.model_rebuild()

_ADAPTER: TypeAdapter[FilterNode] = TypeAdapter(FilterNode)


def _json_path(base: str, data: Any, loc: tuple[Any, ...], *, missing: bool) -> tuple[str, Any]:
    """Turn a pydantic error location into a JSON path over the input document.

    Discriminated unions put their tag values (``and``, ``property``) into `loc`; those are
    not keys of the document, so walking `loc` along the data tells them apart.
    """
    path, node = base, data
    for i, part in enumerate(loc):
        in_map = isinstance(node, Mapping) and part in node
        in_list = isinstance(node, list | tuple) and isinstance(part, int) and part < len(node)
        if in_map or in_list:
            path, node = join_path(path, part), node[part]
        elif missing and i == len(loc) - 1 and isinstance(node, Mapping):
            path, node = join_path(path, part), None  # a missing field
    return path, node


def _message(err: Mapping[str, Any]) -> tuple[str | None, str]:
    kind = err["type"]
    ctx = err.get("ctx") or {}
    if kind == "union_tag_invalid":
        field = ctx.get("discriminator", "type").strip("'")
        return (
            field,
            f"unknown {field} {ctx.get('tag')!r}; expected one of {ctx.get('expected_tags')}",
        )
    if kind == "union_tag_not_found":
        field = ctx.get("discriminator", "type").strip("'")
        return field, f"missing '{field}'"
    if kind == "missing":
        return None, "field required"
    msg = str(err["msg"])
    return None, msg.removeprefix("Value error, ")


def _check_text(text: str, *, path: str) -> None:
    if "\x00" in text:
        raise FilterError(path, "text may not contain NUL characters (\\u0000)")
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            # Not echoed: the text could not be encoded into the error response either.
            msg = "text is not valid Unicode (it holds a lone surrogate)"
            raise FilterError(path, msg) from None


def check_tree_limits(data: Any, *, path: str = "filter_tree") -> None:
    """Refuse a JSON tree over the size limits, or with text no engine can take, iteratively.

    Limits: MAX_TREE_DEPTH levels, MAX_TREE_NODES nodes, JSON nested at most
    MAX_VALUE_NESTING levels inside one node. Strings (values and keys) must be valid
    Unicode without NUL: PostgreSQL cuts a statement at NUL, and a lone surrogate cannot be
    sent to an engine or written into a JSON response.

    Args:
        data: The decoded JSON document of a tree (anything: shape is checked later).
        path: JSON path of `data`, the prefix of error paths.

    Raises:
        FilterLimitError: The tree is deeper or larger than allowed, at the node that
            crosses the limit.
        FilterError: Bad text, or JSON nested too deeply inside a node.
    """
    nodes = 0
    # (value, its path, tree level of the node it is in, JSON nesting inside that node)
    stack: list[tuple[Any, str, int, int]] = [(data, path, 1, 0)]
    while stack:
        value, where, level, nesting = stack.pop()
        if isinstance(value, str):
            _check_text(value, path=where)
            continue
        if isinstance(value, Mapping):
            items = list(value.items())
        elif isinstance(value, list | tuple):
            items = list(enumerate(value))
        else:
            continue
        if nesting == 0 and isinstance(value, Mapping):  # a node
            nodes += 1
            if level > MAX_TREE_DEPTH:
                raise FilterLimitError(where, f"tree deeper than {MAX_TREE_DEPTH} levels")
            if nodes > MAX_TREE_NODES:
                raise FilterLimitError(where, f"tree has more than {MAX_TREE_NODES} nodes")
        elif nesting > MAX_VALUE_NESTING:
            raise FilterError(where, f"JSON nested deeper than {MAX_VALUE_NESTING} levels here")
        pending: list[tuple[Any, str, int, int]] = []
        for key, item in items:
            if isinstance(key, str):
                _check_text(key, path=where)
            child = join_path(where, key)
            is_node = isinstance(value, Mapping) and nesting == 0
            if is_node and key == "children" and isinstance(item, list | tuple):
                pending += [(c, join_path(child, i), level + 1, 0) for i, c in enumerate(item)]
            elif is_node and key == "filters":
                pending.append((item, child, level + 1, 0))
            else:
                pending.append((item, child, level, nesting + 1))
        stack += reversed(pending)  # depth first, first child first: the first error wins


def parse_filter_tree(data: Mapping[str, Any], *, path: str = "filter_tree") -> FilterNode:
    """Check the limits and shape of a JSON filter tree and return it as typed nodes.

    Args:
        data: The decoded JSON object (``{"type": "and", "children": [...]}``).
        path: JSON path of `data` in the request, used as the prefix of error paths.

    Returns:
        The root node.

    Raises:
        FilterLimitError: The tree is over the size limits (see `check_tree_limits`).
        FilterError: The first shape problem, with its JSON path.
    """
    if isinstance(data, BaseModel):
        return data  # already parsed
    if not isinstance(data, Mapping):
        raise FilterError(path, "a filter node must be a JSON object")
    check_tree_limits(data, path=path)
    try:
        return _ADAPTER.validate_python(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        err_path, _ = _json_path(path, data, tuple(err["loc"]), missing=err["type"] == "missing")
        field, message = _message(err)
        if field is not None:
            err_path = join_path(err_path, field)
        raise FilterError(err_path, message) from None


def dump_filter_tree(node: FilterNode) -> dict[str, Any]:
    """The JSON form of a tree (defaults included), e.g. to store it back."""
    return _ADAPTER.dump_python(node, mode="json")
