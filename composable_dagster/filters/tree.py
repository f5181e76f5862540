"""The filter tree as typed, immutable values (pydantic v2).

Nodes are discriminated on ``type`` (``and``/``or``/``not``/``condition``) and conditions on
``condition_type``. Shape is checked here; meaning (columns, operators, ids) in `validate`.
Unknown keys are ignored so trees saved by other clients (UI ids, labels) still load.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from composable_dagster.filters.errors import FilterError, join_path

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


def parse_filter_tree(data: Mapping[str, Any], *, path: str = "filter_tree") -> FilterNode:
    """Check the shape of a JSON filter tree and return it as typed nodes.

    Args:
        data: The decoded JSON object (``{"type": "and", "children": [...]}``).
        path: JSON path of `data` in the request, used as the prefix of error paths.

    Returns:
        The root node.

    Raises:
        FilterError: The first shape problem, with its JSON path.
    """
    if isinstance(data, BaseModel):
        return data  # already parsed
    if not isinstance(data, Mapping):
        raise FilterError(path, "a filter node must be a JSON object")
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
