"""Every failure is a FilterError whose message starts with the exact JSON path."""

from __future__ import annotations

from typing import Any

import pytest

from composable_dagster.filters import (
    AudienceDef,
    FilterCycleError,
    FilterError,
    ResultType,
    TraitDef,
    TraitType,
    compile_members,
    compile_preview,
    compile_trait_values,
    parse_filter_tree,
    validate_filter_tree,
    validate_trait,
)
from tests.filters.filters_catalog import NOW, make_schema
from tests.filters.test_filters_semantics import AND, AUD, EV, NOT, OR, REL, TR, P, W

CYCLES = {
    "a": AudienceDef("a", "A", "customers", AUD("b")),
    "b": AudienceDef("b", "B", "customers", AND(P("age", "is_null"), AUD("a"))),
    "self": AudienceDef("self", "Self", "customers", AUD("self")),
    "orders_aud": AudienceDef("orders_aud", "Orders audience", "orders", AND()),
    "broken": AudienceDef("broken", "Broken", "customers", P("nope", "is_null")),
}
BAD_TRAITS = {
    "f1": TraitDef("f1", "f1", "f1", "customers", TraitType.FORMULA, ResultType.NUMBER,
                   {"expression": "f2 + 1"}),
    "f2": TraitDef("f2", "f2", "f2", "customers", TraitType.FORMULA, ResultType.NUMBER,
                   {"expression": "f1 * 2"}),
    "order_trait": TraitDef("order_trait", "ot", "ot", "orders", TraitType.SQL,
                            ResultType.NUMBER, {"sql": "SELECT 1 AS entity_key, 2 AS value"}),
}  # fmt: skip
SCHEMA = make_schema(extra_audiences=CYCLES, extra_traits=BAD_TRAITS)


def _check(tree: Any, path: str, fragment: str) -> FilterError:
    with pytest.raises(FilterError) as info:
        compile_members(tree, parent_model_id="customers", schema=SCHEMA, now=NOW)
    err = info.value
    assert err.path == path, str(err)
    assert fragment in err.message, str(err)
    assert str(err) == f"{path}: {err.message}"
    return err


ERROR_CASES = [
    # shape
    ({"type": "xor"}, "filter_tree.type", "unknown type 'xor'"),
    ({"children": []}, "filter_tree.type", "missing 'type'"),
    ([], "filter_tree", "JSON object"),
    (AND(P("age", "is_null"), {"type": "condition"}), "filter_tree.children[1].condition_type",
     "missing"),
    (AND({"type": "condition", "condition_type": "magic"}),
     "filter_tree.children[0].condition_type", "unknown condition_type 'magic'"),
    (AND(P("age", "is_null"), {"type": "condition", "condition_type": "property",
                               "operator": "is_null"}),
     "filter_tree.children[1].column", "field required"),
    ({"type": "not", "children": []}, "filter_tree.children", "exactly one child"),
    ({"type": "not", "children": [AND(), AND()]}, "filter_tree.children", "exactly one child"),
    ({"type": "and", "children": "x"}, "filter_tree.children", ""),
    (REL("orders", count_value="many"), "filter_tree.count_value", "integer"),
    (REL("orders", quantifier="most"), "filter_tree.quantifier", ""),
    (EV(window={"type": "within", "value": 3, "unit": "years"}),
     "filter_tree.time_window.unit", ""),
    (EV(window={"type": "sometime", "value": 3}), "filter_tree.time_window.type", ""),
    (REL("orders", AND({"type": "condition"})), "filter_tree.filters.children[0].condition_type",
     "missing"),
    # columns, operators, values
    (AND(P("age", "is_null"), P("ltv2", "equals", 1)), "filter_tree.children[1].column",
     "unknown column 'ltv2' on model customers"),
    (P("age", "contains", "1"), "filter_tree.operator",
     "operator 'contains' does not apply to column 'age' of type number"),
    (P("name", "greater_than", "a"), "filter_tree.operator", "does not apply"),
    (P("vip", "in", [True]), "filter_tree.operator", "does not apply"),
    (P("age", "is_true"), "filter_tree.operator", "does not apply"),
    (P("age", "matches", 1), "filter_tree.operator", "unknown operator 'matches'"),
    (P("age", "equals", "30"), "filter_tree.value", "expected a number"),
    (P("age", "equals", True), "filter_tree.value", "expected a number"),
    (P("age", "equals"), "filter_tree.value", "a value is required"),
    (P("name", "equals", 3), "filter_tree.value", "expected a string"),
    (P("vip", "equals", "true"), "filter_tree.value", "expected true or false"),
    (P("signup_at", "greater_than", "yesterday"), "filter_tree.value", "invalid ISO-8601"),
    (P("age", "in", []), "filter_tree.value", "non-empty list"),
    (P("age", "in", [1, "x"]), "filter_tree.value[1]", "expected a number"),
    (P("age", "between", [1]), "filter_tree.value", "[low, high]"),
    (P("age", "between", 1), "filter_tree.value2", "needs value2"),
    (P("age", "between", [1, "x"]), "filter_tree.value[1]", "expected a number"),
    (P("name", "contains", ""), "filter_tree.value", "non-empty string"),
    (P("name", "equals", ["a"]), "filter_tree.value", "not a list"),
    # relations and events
    (REL("nope"), "filter_tree.relationship_id", "unknown relationship 'nope'"),
    (REL("product"), "filter_tree.relationship_id",
     "relationship product starts at model orders, not at customers"),
    (REL("orders", REL("orders")), "filter_tree.filters.relationship_id",
     "starts at model customers, not at orders"),
    (REL("orders", P("brand", "equals", "x")), "filter_tree.filters.column",
     "unknown column 'brand' on model orders"),
    (REL("orders", count_operator="between", count_value=2), "filter_tree.count_value2",
     "needs count_value2"),
    (REL("orders", count_operator="between", count_value=2, count_value2=1),
     "filter_tree.count_value2", ">= count_value"),
    (REL("orders", count_value=-1), "filter_tree.count_value", ">= 0"),
    (EV("favorites"), "filter_tree.relationship_id", "has no timestamp_column"),
    (EV(window=W("within", "2024-01-01")), "filter_tree.time_window.value", "integer amount"),
    (EV(window=W("within", -3)), "filter_tree.time_window.value", ">= 0"),
    (EV(window=W("between", 3)), "filter_tree.time_window.value2", "needs value2"),
    (EV(window=W("between", 3, value2="2024-01-01")), "filter_tree.time_window.value2",
     "both"),
    (EV(window=W("before", "soon")), "filter_tree.time_window.value", "invalid ISO-8601"),
    (EV(filters=P("amount", "equals", 1)), "filter_tree.filters.column",
     "unknown column 'amount' on model events"),
    # traits
    (TR("nope", "equals", 1), "filter_tree.trait_id", "unknown trait 'nope'"),
    (TR("order_trait", "equals", 1), "filter_tree.trait_id", "belongs to model orders"),
    (TR("last_category", "greater_than", 1), "filter_tree.operator",
     "does not apply to trait 'last_category' of type text"),
    (TR("order_count", "equals", "1"), "filter_tree.value", "expected a number"),
    (REL("orders", TR("order_count", "equals", 1)), "filter_tree.filters.trait_id",
     "not to orders"),
    (TR("f1", "equals", 1), "filter_tree.trait_id", "formula cycle: f1 -> f2 -> f1"),
    # audiences
    (AUD("nope"), "filter_tree.audience_id", "unknown audience 'nope'"),
    (AUD("orders_aud"), "filter_tree.audience_id", "built on model orders"),
    (OR(P("age", "is_null"), AUD("a")), "filter_tree.children[1].audience_id",
     "audience reference cycle: A -> B -> A"),
    (AUD("self", "is_not_member"), "filter_tree.audience_id", "cycle: Self -> Self"),
    (AUD("broken"), "filter_tree.audience_id",
     "audience Broken is invalid: filter_tree.column: unknown column 'nope'"),
    (NOT(AUD("b")), "filter_tree.children[0].audience_id", "cycle: B -> A -> B"),
]  # fmt: skip


@pytest.mark.parametrize(("tree", "path", "fragment"), ERROR_CASES)
def test_error_paths(tree: Any, path: str, fragment: str) -> None:
    _check(tree, path, fragment)


def test_cycle_error_type() -> None:
    err = _check(AUD("a"), "filter_tree.audience_id", "A -> B -> A")
    assert isinstance(err, FilterCycleError)


def test_own_audience_id_detects_cycles() -> None:
    with pytest.raises(FilterCycleError, match="A -> B -> A"):
        validate_filter_tree(AUD("b"), parent_model_id="customers", schema=SCHEMA, audience_id="a")


def test_custom_path_prefix() -> None:
    with pytest.raises(FilterError) as info:
        parse_filter_tree({"type": "or", "children": [{"type": 1}]}, path="body.tree")
    assert info.value.path == "body.tree.children[0].type"
    with pytest.raises(FilterError) as info:
        validate_filter_tree(P("x", "is_null"), parent_model_id="customers", schema=SCHEMA,
                             path="tree")  # fmt: skip
    assert str(info.value) == "tree.column: unknown column 'x' on model customers"


@pytest.mark.parametrize(
    ("kwargs", "path"),
    [
        ({"parent_model_id": "nope"}, "parent_model_id"),
        ({"dialect": "oracle"}, "dialect"),
        ({"limit": -1}, "limit"),
        ({"columns": ["age", "nope"]}, "columns[1]"),
    ],
)
def test_argument_errors(kwargs: dict, path: str) -> None:
    args = {"parent_model_id": "customers", "schema": SCHEMA, "now": NOW, **kwargs}
    with pytest.raises(FilterError) as info:
        compile_preview(AND(), **args)
    assert info.value.path == path


def _trait(kind: TraitType, result: ResultType = ResultType.NUMBER, **config: Any) -> TraitDef:
    return TraitDef("t", "t", "t", "customers", kind, result, config)


AGG, OCC, SQL, FORM = TraitType.AGGREGATION, TraitType.OCCURRENCE, TraitType.SQL, TraitType.FORMULA
TRAIT_ERRORS = [
    (_trait(AGG, function="count"), "config.relationship_id", "field required"),
    (_trait(AGG, relationship_id="nope", function="count"), "config.relationship_id",
     "unknown relationship"),
    (_trait(AGG, relationship_id="orders", function="median"), "config.function", "one of"),
    (_trait(AGG, relationship_id="orders", function="sum"), "config.column", "field required"),
    (_trait(AGG, relationship_id="orders", function="sum", column="category"), "config.column",
     "does not apply"),
    (_trait(AGG, relationship_id="orders", function="sum", column="nope"), "config.column",
     "unknown column"),
    (_trait(AGG, relationship_id="orders", function="count", filter=P("nope", "is_null")),
     "config.filter.column", "unknown column 'nope' on model orders"),
    (_trait(AGG, ResultType.STRING, relationship_id="orders", function="count"), "result_type",
     "number"),
    (_trait(OCC, relationship_id="orders", position="middle", column="category"),
     "config.position", "one of"),
    (_trait(OCC, relationship_id="favorites", position="first", column="brand"),
     "config.order_by", "no timestamp_column"),
    (_trait(SQL, sql="SELEC 1"), "config.sql", ""),
    (_trait(SQL, sql="SELECT 1 AS entity_key; SELECT 2"), "config.sql", "exactly one SELECT"),
    (_trait(SQL, sql="DELETE FROM customers"), "config.sql", "exactly one SELECT"),
    (_trait(SQL, sql="SELECT id AS entity_key FROM customers"), "config.sql",
     "entity_key and value"),
    (_trait(FORM, expression="order_count + nope"), "config.expression", "unknown trait slug"),
    (_trait(FORM, expression="upper(order_count)"), "config.expression", "not allowed"),
    (_trait(FORM, expression="order_count + 'a'"), "config.expression", "not allowed"),
    (_trait(FORM, expression="(SELECT 1)"), "config.expression", "not allowed"),
    (_trait(FORM, expression="last_category + 1"), "config.expression", "not a number"),
    (_trait(FORM, expression="order_count > 1"), "result_type", "boolean"),
    (_trait(FORM, expression="f1 + 1"), "config.expression", "formula cycle: f1 -> f2 -> f1"),
    (_trait(FORM, expression="t + 1"), "config.expression", "unknown trait slug"),
    # Sizes a sqlglot parse would recurse on (RecursionError, a 500, before the bounds).
    (_trait(FORM, expression="(" * 3000 + "order_count" + ")" * 3000), "config.expression",
     "longer than 2000 characters"),
    (_trait(FORM, expression="(" * 40 + "order_count" + ")" * 40), "config.expression",
     "nested deeper than 32"),
    (_trait(FORM, expression=" + ".join(["order_count"] * 100)), "config.expression",
     "more than 64 terms"),
]  # fmt: skip


@pytest.mark.parametrize(("trait", "path", "fragment"), TRAIT_ERRORS)
def test_trait_errors(trait: TraitDef, path: str, fragment: str) -> None:
    with pytest.raises(FilterError) as info:
        validate_trait(trait, schema=SCHEMA)
    assert info.value.path == path, str(info.value)
    assert fragment in info.value.message, str(info.value)
    with pytest.raises(FilterError):
        compile_trait_values(trait, schema=SCHEMA)


def test_self_referencing_formula() -> None:
    trait = TraitDef("me", "me", "me", "customers", FORM, ResultType.NUMBER,
                     {"expression": "me + 1"})  # fmt: skip
    schema = make_schema(extra_traits={"me": trait})
    with pytest.raises(FilterCycleError, match="me -> me"):
        validate_trait(trait, schema=schema)
