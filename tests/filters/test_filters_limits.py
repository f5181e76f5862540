"""Hostile trees: over the size limits, with values past every range. Each one is refused
with its JSON path (a FilterError, a 400 in the API), never an exception from the stack."""

from __future__ import annotations

import time
from typing import Any

import pytest

from composable_dagster.filters import (
    AudienceDef,
    FilterError,
    compile_count,
    compile_members,
    validate_filter_tree,
)
from composable_dagster.filters.tree import MAX_TREE_DEPTH, FilterLimitError
from tests.filters.filters_catalog import NOW, make_schema
from tests.filters.test_filters_semantics import AND, AUD, EV, NOT, OR, REL, TR, P, W

LEAF = P("age", "is_null")
INLINED = "once referenced audiences and trait filters are inlined"


def chain(levels: int, leaf: dict = LEAF, kind: str = "and") -> dict:
    """`levels` nodes, each group holding the next: depth `levels`."""
    tree = leaf
    for _ in range(levels - 1):
        tree = {"type": kind, "children": [tree]}
    return tree


def at_depth(levels: int, base: str = "filter_tree") -> str:
    """Path of the node at tree level `levels` of a `chain`."""
    return base + ".children[0]" * (levels - 1)


def _audience_chain(n: int) -> dict[str, AudienceDef]:
    """c1 .. cn, each `and(member of the previous, a condition)`: 2 levels per link."""
    out = {"c0": AudienceDef("c0", "C0", "customers", LEAF)}
    for i in range(1, n + 1):
        out[f"c{i}"] = AudienceDef(f"c{i}", f"C{i}", "customers", AND(AUD(f"c{i - 1}"), LEAF))
    return out


def _doubling(n: int) -> dict[str, AudienceDef]:
    """d1 .. dn, each referencing the previous twice: 2^n inlined copies, n*2 levels."""
    out = {"d0": AudienceDef("d0", "D0", "customers", LEAF)}
    for i in range(1, n + 1):
        previous = AUD(f"d{i - 1}")
        out[f"d{i}"] = AudienceDef(f"d{i}", f"D{i}", "customers", OR(previous, previous))
    return out


AUDIENCES = {
    **_audience_chain(20),
    **_doubling(12),
    "many_relations": AudienceDef(
        "many_relations", "Many relations", "customers", AND(*[REL("orders")] * 60)
    ),
    "deep": AudienceDef("deep", "Deep", "customers", chain(MAX_TREE_DEPTH + 1)),
}
SCHEMA = make_schema(extra_audiences=AUDIENCES)

LIMIT_CASES = [
    # depth, checked on the raw JSON before anything recurses
    (chain(33), at_depth(33), "tree deeper than 32 levels"),
    (chain(150), at_depth(33), "tree deeper than 32 levels"),
    (chain(33, kind="not"), at_depth(33), "tree deeper than 32 levels"),
    (REL("orders", chain(32)), at_depth(32, "filter_tree.filters"), "tree deeper than 32 levels"),
    (AND(LEAF, chain(32)), at_depth(32, "filter_tree.children[1]"), "tree deeper than 32 levels"),
    # node count: 1 group + 1000 conditions
    (AND(*[LEAF] * 1000), "filter_tree.children[999]", "tree has more than 1000 nodes"),
    (OR(*[REL("orders", LEAF)] * 500), "filter_tree.children[499].filters",
     "tree has more than 1000 nodes"),
    # subqueries (relation, event and trait conditions), counted by the compiler
    (AND(*[REL("orders")] * 101), "filter_tree.children[100]",
     "more than 100 relation, event and trait conditions"),
    (OR(*[EV()] * 50, *[TR("order_count", "equals", 1)] * 51), "filter_tree.children[100]",
     "more than 100 relation, event and trait conditions"),
    (AND(AUD("many_relations"), AUD("many_relations")), "filter_tree.children[1].audience_id",
     "more than 100 relation, event and trait conditions (referenced audiences included)"),
    # audiences are inlined: their levels and nodes count
    (AUD("c20"), "filter_tree.audience_id", f"tree deeper than 32 levels {INLINED}"),
    (NOT(AUD("c16")), "filter_tree.children[0].audience_id", "tree deeper than 32 levels"),
    (AUD("d12"), "filter_tree.audience_id", f"tree has more than 1000 nodes {INLINED}"),
    (AUD("deep"), "filter_tree.audience_id",
     f"audience Deep is invalid: {at_depth(33)}: tree deeper than 32 levels"),
    # JSON nested inside one node, and text no engine (or JSON response) can carry
    (P("age", "in", [[[[[[[[[1]]]]]]]]]), "filter_tree.value" + "[0]" * 8,
     "JSON nested deeper than 8 levels"),
    (P("name", "equals", "ann\ud800"), "filter_tree.value", "lone surrogate"),
    (AND(P("name", "in", ["a", "\udfff"])), "filter_tree.children[0].value[1]", "lone surrogate"),
    ({"type": "and", "children": [], "ui": {"label\ud800": 1}}, "filter_tree.ui", "lone surrogate"),
    (P("name", "equals", "a\x00b"), "filter_tree.value", "NUL"),
    (REL("orders", P("category", "starts_with", "\x00")), "filter_tree.filters.value", "NUL"),
]  # fmt: skip

OVERFLOW_CASES = [
    # relative windows reaching before year 1 (units_ago raised OverflowError/ValueError)
    (EV(window=W("before", 1_000_000)), "filter_tree.time_window.value",
     "1000000 days before now is before year 1"),
    (EV(window=W("within", 30_000, "months")), "filter_tree.time_window.value",
     "30000 months before now is before year 1"),
    (EV(window=W("within", 2**31, "days")), "filter_tree.time_window.value", "before year 1"),
    (EV(window=W("not_within", 10**30, "hours")), "filter_tree.time_window.value",
     "before year 1"),
    (EV(window=W("after", 10**9, "weeks")), "filter_tree.time_window.value", "before year 1"),
    (EV(window=W("between", 1, "weeks", value2=10**12)), "filter_tree.time_window.value2",
     "before year 1"),
    (EV(window=W("within", 24_282, "months")), "filter_tree.time_window.value",
     "before year 1"),
    # aware timestamps that leave years 1-9999 in UTC (to_utc_naive raised OverflowError)
    (P("signup_at", "equals", "0001-01-01T00:30:00+01:00"), "filter_tree.value",
     "outside years 1-9999 in UTC"),
    (P("signup_at", "greater_than", "9999-12-31T23:00:00-05:00"), "filter_tree.value",
     "outside years 1-9999 in UTC"),
    (P("signup_at", "in", ["2024-01-01", "9999-12-31T23:00:00-05:00"]), "filter_tree.value[1]",
     "outside years 1-9999"),
    (P("signup_at", "between", ["0001-01-01T00:30:00+01:00", "2024-01-01"]),
     "filter_tree.value[0]", "outside years 1-9999"),
    (P("signup_at", "not_between", "2024-01-01", value2="9999-12-31T23:00:00-05:00"),
     "filter_tree.value2", "outside years 1-9999"),
    (EV(window=W("after", "0001-01-01T00:30:00+01:00")), "filter_tree.time_window.value",
     "outside years 1-9999"),
    (EV(window=W("between", "2024-01-01", value2="9999-12-31T23:00:00-05:00")),
     "filter_tree.time_window.value2", "outside years 1-9999"),
    (TR("first_order_at", "less_than", "0001-01-01T00:59:59+01:00"), "filter_tree.value",
     "outside years 1-9999"),
    # counts no engine can compare with a row count
    (REL("orders", count_value=2**63), "filter_tree.count_value",
     "count_value must be <= 9223372036854775807"),
    (EV(count_operator="between", count_value=1, count_value2=2**64),
     "filter_tree.count_value2", "count_value2 must be <= 9223372036854775807"),
]  # fmt: skip

# Just inside every limit: these compile.
ACCEPTED = [
    chain(32),
    chain(32, kind="not"),
    AND(*[LEAF] * 999),
    AND(*[REL("orders")] * 100),
    AUD("c15"),  # 32 levels once inlined
    AUD("d7"),
    EV(window=W("within", 24_281, "months")),  # back to 0001-01-15
    EV(window=W("between", "0001-01-01T01:00:00+01:00", value2="9999-12-31T18:59:59-05:00")),
    P("signup_at", "in", ["0001-01-01", "9999-12-31T23:59:59"]),
    REL("orders", count_operator="at_most", count_value=2**63 - 1),
]


def _refused(tree: Any, path: str, fragment: str) -> FilterError:
    with pytest.raises(FilterError) as info:
        validate_filter_tree(tree, parent_model_id="customers", schema=SCHEMA)
    err = info.value
    assert (err.path, fragment in err.message) == (path, True), str(err)
    for dialect in ("duckdb", "postgres"):
        with pytest.raises(FilterError) as compiled:
            compile_members(tree, parent_model_id="customers", schema=SCHEMA, now=NOW,
                            dialect=dialect)  # fmt: skip
        assert str(compiled.value) == str(err)
    return err


@pytest.mark.parametrize(("tree", "path", "fragment"), LIMIT_CASES)
def test_limits_are_refused_with_their_path(tree: Any, path: str, fragment: str) -> None:
    err = _refused(tree, path, fragment)
    over_a_limit = fragment.startswith("tree ") or "more than" in fragment
    assert isinstance(err, FilterLimitError) == over_a_limit, repr(err)


@pytest.mark.parametrize(("tree", "path", "fragment"), OVERFLOW_CASES)
def test_values_past_every_range_are_refused(tree: Any, path: str, fragment: str) -> None:
    _refused(tree, path, fragment)


@pytest.mark.parametrize("tree", ACCEPTED)
def test_trees_inside_the_limits_compile(tree: Any) -> None:
    for dialect in ("duckdb", "postgres"):
        sql = compile_count(tree, parent_model_id="customers", schema=SCHEMA, now=NOW,
                            dialect=dialect).sql  # fmt: skip
        assert sql.startswith("SELECT COUNT(*)")


def test_a_very_deep_tree_is_refused_quickly() -> None:
    """100,000 levels: a recursive walk would exhaust the stack; the check never recurses."""
    tree = chain(100_000)
    started = time.perf_counter()
    _refused(tree, at_depth(33), "tree deeper than 32 levels")
    assert time.perf_counter() - started < 2.0
