"""Table-driven semantics on a real DuckDB: every operator and node type, known answers."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import duckdb
import pytest

from composable_dagster.filters import (
    Column,
    ColumnType,
    EntityType,
    ModelDef,
    compile_count,
    compile_members,
)
from tests.filters.filters_catalog import NOW, load_duckdb, make_schema

D = timedelta(days=1)
H = timedelta(hours=1)

CUSTOMERS = [
    dict(id=1, name="ann", email="a@gmail.com", age=30, ltv=10.5, vip=True,
         signup_at=datetime(2024, 1, 10), country="DE", account_id=1),
    dict(id=2, name="Bob", email="b%_x@yahoo.com", age=45, ltv=200.0, vip=False,
         signup_at=datetime(2023, 6, 1), country="US", account_id=2),
    dict(id=3, name=None, email=None, age=None, ltv=None, vip=None, signup_at=None,
         country=None, account_id=None),
    dict(id=4, name="al%ce", email="c@gmail.com", age=18, ltv=0.0, vip=True,
         signup_at=datetime(2024, 6, 1), country="DE", account_id=1),
    dict(id=5, name="x_y", email="d@x.org", age=65, ltv=1000.0, vip=False,
         signup_at=datetime(2024, 6, 15, 12), country="FR", account_id=3),
]  # fmt: skip


def _order(oid: int, cid: Any, cat: str, amount: Any, status: str, ts: Any, pid: Any) -> dict:
    return dict(order_id=oid, customer_id=cid, category=cat, amount=amount, status=status,
                created_at=ts, product_id=pid)  # fmt: skip


ORDERS = [
    _order(1, 1, "books", 10, "paid", NOW - D, 1),
    _order(2, 1, "games", 50, "paid", NOW - 40 * D, 2),
    _order(3, 2, "books", 200, "refunded", NOW - 5 * D, 1),
    _order(4, 2, "books", 5, "paid", NOW - 100 * D, 3),
    _order(5, 2, "toys", None, "paid", None, None),
    _order(6, None, "books", 20, "paid", NOW - D, 1),  # NULL foreign key
    _order(7, 999, "games", 1, "paid", NOW - D, 1),  # dangling foreign key
    _order(8, 5, "books", 7, "paid", NOW - 2 * D, 2),
]


def _event(eid: int, cid: Any, kind: Any, ts: Any) -> dict:
    return dict(event_id=eid, customer_id=cid, event_type=kind, occurred_at=ts, revenue=1)


EVENTS = [
    _event(1, 1, "view", NOW - H),
    _event(2, 1, "purchase", NOW - 2 * D),
    _event(3, 1, "purchase", NOW - 10 * D),
    _event(4, 2, "purchase", NOW - 30 * D),
    _event(5, 2, "view", NOW - 31 * D),
    _event(6, 4, "click", NOW - 400 * D),
    _event(7, 4, "view", None),
    _event(8, 1, "purchase", NOW - 45 * D),
    _event(9, None, "purchase", NOW - H),
]
DATA = {
    "customers": CUSTOMERS,
    "orders": ORDERS,
    "events": EVENTS,
    "products": [
        dict(product_id=1, brand="x", price=1),
        dict(product_id=2, brand="y", price=2),
        dict(product_id=3, brand=None, price=3),
    ],
    "favorites": [
        dict(customer_id=c, product_id=p)
        for c, p in [(1, 1), (1, 2), (2, 3), (4, 1), (None, 2), (5, 9)]
    ],
    "tickets": [
        dict(ticket_id=1, account_id=1, priority="high"),
        dict(ticket_id=2, account_id=1, priority="low"),
        dict(ticket_id=3, account_id=3, priority="high"),
        dict(ticket_id=4, account_id=None, priority="high"),
    ],
}
ALL = {1, 2, 3, 4, 5}
DE_MODEL = ModelDef(
    id="de_customers",
    name="de_customers",
    entity_type=EntityType.PARENT,
    primary_key="id",
    columns={"id": Column("id", ColumnType.NUMBER), "age": Column("age", ColumnType.NUMBER)},
    sql="SELECT id, age FROM main.customers WHERE country = 'DE'",
)
SCHEMA = make_schema(prefix="main.", extra_models={"de_customers": DE_MODEL})


def P(column: str, operator: str, value: Any = None, **kw: Any) -> dict:
    node = {"type": "condition", "condition_type": "property", "column": column,
            "operator": operator, **kw}  # fmt: skip
    if value is not None:
        node["value"] = value
    return node


def TR(trait: str, operator: str, value: Any = None) -> dict:
    node = {"type": "condition", "condition_type": "trait", "trait_id": trait,
            "operator": operator}  # fmt: skip
    if value is not None:
        node["value"] = value
    return node


def REL(rel: str, filters: dict | None = None, **kw: Any) -> dict:
    node = {"type": "condition", "condition_type": "relation", "relationship_id": rel, **kw}
    if filters is not None:
        node["filters"] = filters
    return node


def EV(rel: str = "events", window: dict | None = None, filters: dict | None = None, **kw):
    node = {"type": "condition", "condition_type": "event", "relationship_id": rel, **kw}
    if window is not None:
        node["time_window"] = window
    if filters is not None:
        node["filters"] = filters
    return node


def W(kind: str, value: Any, unit: str = "days", value2: Any = None) -> dict:
    out = {"type": kind, "value": value, "unit": unit}
    if value2 is not None:
        out["value2"] = value2
    return out


def AUD(audience: str, operator: str = "is_member") -> dict:
    return {"type": "condition", "condition_type": "audience", "audience_id": audience,
            "operator": operator}  # fmt: skip


def AND(*c: dict) -> dict:
    return {"type": "and", "children": list(c)}


def OR(*c: dict) -> dict:
    return {"type": "or", "children": list(c)}


def NOT(c: dict) -> dict:
    return {"type": "not", "children": [c]}


PROPERTY_CASES = [
    (P("name", "equals", "ann"), {1}),
    (P("name", "equals", "Ann"), set()),  # case-sensitive
    (P("name", "not_equals", "ann"), {2, 4, 5}),  # NULL does not match not_equals
    (NOT(P("name", "equals", "ann")), {2, 3, 4, 5}),  # ... but does match not(equals)
    (P("age", "greater_than", 30), {2, 5}),
    (P("age", "less_than", 30), {4}),
    (P("age", "greater_than_or_equal", 30), {1, 2, 5}),
    (P("age", "less_than_or_equal", 30), {1, 4}),
    (P("ltv", "greater_than", 99.9), {2, 5}),
    (P("ltv", "equals", 0), {4}),
    (P("name", "contains", "%"), {4}),  # LIKE wildcards are literal
    (P("name", "contains", "_"), {5}),
    (P("email", "contains", "%_"), {2}),
    (P("email", "contains", "gmail"), {1, 4}),
    (P("email", "contains", "GMAIL"), set()),
    (P("email", "not_contains", "gmail"), {2, 5}),
    (NOT(P("email", "contains", "gmail")), {2, 3, 5}),
    (P("email", "starts_with", "b%"), {2}),
    (P("name", "starts_with", "a"), {1, 4}),
    (P("name", "starts_with", "_"), set()),
    (P("name", "ends_with", "e"), {4}),
    (P("name", "ends_with", "_y"), {5}),
    (P("email", "ends_with", "@gmail.com"), {1, 4}),
    (P("email", "not_starts_with", "a"), {2, 4, 5}),
    (P("email", "not_ends_with", ".com"), {5}),
    (NOT(P("email", "not_ends_with", ".com")), {1, 2, 3, 4}),
    (P("age", "is_null"), {3}),
    (P("age", "is_not_null"), {1, 2, 4, 5}),
    (NOT(P("age", "is_null")), {1, 2, 4, 5}),
    (P("account_id", "is_null"), {3}),
    (P("country", "in", ["DE", "FR"]), {1, 4, 5}),
    (P("country", "in", "US"), {2}),
    (P("country", "not_in", ["DE"]), {2, 5}),
    (NOT(P("country", "in", ["DE"])), {2, 3, 5}),
    (P("age", "in", [18, 65]), {4, 5}),
    (P("age", "not_in", [18, 65]), {1, 2}),
    (P("age", "between", [18, 30]), {1, 4}),
    (P("age", "between", 18, value2=30), {1, 4}),
    (P("age", "between", [30, 18]), set()),
    (P("age", "not_between", [18, 30]), {2, 5}),
    (NOT(P("age", "between", [18, 30])), {2, 3, 5}),
    (P("ltv", "between", [0, 10.5]), {1, 4}),
    (P("vip", "is_true"), {1, 4}),
    (P("vip", "is_false"), {2, 5}),
    (NOT(P("vip", "is_true")), {2, 3, 5}),
    (P("vip", "equals", False), {2, 5}),
    (P("vip", "not_equals", True), {2, 5}),
    (P("signup_at", "greater_than", "2024-01-01"), {1, 4, 5}),
    (P("signup_at", "less_than", "2024-01-10T00:00:00Z"), {2}),
    (P("signup_at", "between", ["2024-01-10", "2024-06-01T00:00:00"]), {1, 4}),
    (P("signup_at", "equals", "2024-06-15T12:00:00+00:00"), {5}),
    (P("signup_at", "greater_than_or_equal", "2024-06-15T14:00:00+02:00"), {5}),
    (P("signup_at", "in", ["2024-06-01", "2023-06-01"]), {2, 4}),
    (P("signup_at", "less_than_or_equal", "2023-06-01"), {2}),
]
GROUP_CASES = [
    (AND(), ALL),
    (OR(), set()),
    (NOT(OR()), ALL),
    (NOT(AND()), set()),
    (AND(P("age", "greater_than", 20), P("country", "equals", "DE")), {1}),
    (OR(P("age", "greater_than", 20), P("country", "equals", "DE")), {1, 2, 4, 5}),
    (NOT(NOT(P("name", "equals", "ann"))), {1}),
    (NOT(AND(P("age", "greater_than", 20), P("vip", "is_true"))), {2, 3, 4, 5}),
    (NOT(OR(P("age", "greater_than", 40), P("name", "equals", "ann"))), {3, 4}),
    (AND(OR(P("country", "equals", "DE"), P("country", "equals", "FR")), NOT(P("vip", "is_true"))),
     {5}),
    (OR(AND(), P("age", "is_null")), ALL),
]  # fmt: skip
RELATION_CASES = [
    (REL("orders"), {1, 2, 5}),
    (REL("orders", count_operator="at_least", count_value=2), {1, 2}),
    (REL("orders", count_operator="at_most", count_value=1), {3, 4, 5}),
    (REL("orders", count_operator="at_most", count_value=0), {3, 4}),
    (REL("orders", count_operator="exactly", count_value=0), {3, 4}),
    (REL("orders", count_operator="exactly", count_value=2), {1}),
    (REL("orders", count_operator="between", count_value=1, count_value2=2), {1, 5}),
    (REL("orders", count_operator="between", count_value=0, count_value2=1), {3, 4, 5}),
    (REL("orders", count_operator="at_least", count_value=0), ALL),
    (NOT(REL("orders", count_operator="at_most", count_value=1)), {1, 2}),
    (REL("orders", P("category", "equals", "books"), count_value=2), {2}),
    (REL("orders", P("category", "equals", "books"), count_operator="exactly", count_value=1),
     {1, 5}),
    (REL("orders", P("category", "equals", "books"), count_operator="at_most", count_value=1),
     {1, 3, 4, 5}),
    (REL("orders", P("category", "equals", "books"), quantifier="none"), {3, 4}),
    (REL("orders", quantifier="none"), {3, 4}),
    (REL("orders", P("category", "equals", "books"), quantifier="all"), {5}),
    (REL("orders", quantifier="all"), {1, 2, 5}),
    (REL("orders", P("amount", "is_not_null"), quantifier="all"), {1, 5}),
    (REL("orders", NOT(P("amount", "greater_than", 100)), quantifier="all"), {1, 5}),
    (NOT(REL("orders", P("category", "equals", "books"), quantifier="all")), {1, 2, 3, 4}),
    (REL("orders", REL("product", P("brand", "equals", "x"))), {1, 2}),
    (REL("orders", NOT(REL("product", P("brand", "equals", "x")))), {1, 2, 5}),
    (REL("orders", AND(P("status", "equals", "paid"), P("amount", "less_than", 20))), {1, 2, 5}),
    (REL("favorites"), {1, 2, 4}),
    (REL("favorites", P("brand", "equals", "x")), {1, 4}),
    (REL("favorites", count_operator="exactly", count_value=0), {3, 5}),
    (REL("favorites", P("brand", "equals", "x"), quantifier="all"), {4}),
    (REL("favorites", P("brand", "is_null"), quantifier="all"), {2}),
    (REL("tickets"), {1, 4, 5}),  # keyed on the nullable account_id, not the primary key
    (REL("tickets", quantifier="none"), {2, 3}),
    (NOT(REL("tickets")), {2, 3}),
    (REL("tickets", P("priority", "equals", "high")), {1, 4, 5}),
    (REL("tickets", count_operator="exactly", count_value=2), {1, 4}),
]  # fmt: skip
EVENT_CASES = [
    (EV(), {1, 2, 4}),
    (EV(window=W("within", 30)), {1, 2}),  # 30 days ago exactly is inside
    (EV(window=W("within", 30), count_value=3), {1}),
    (EV(window=W("within", 30), filters=P("event_type", "equals", "purchase")), {1, 2}),
    (EV(window=W("within", 1)), {1}),
    (EV(window=W("within", 24, "hours")), {1}),
    (EV(window=W("within", 1, "weeks")), {1}),
    (EV(window=W("within", 1, "months")), {1, 2}),  # calendar month: back to May 15 12:00
    (EV(window=W("within", 1, "months"), count_operator="exactly", count_value=2), {2}),
    (EV(window=W("not_within", 30)), {1, 2, 4}),
    (EV(window=W("not_within", 30), filters=P("event_type", "equals", "view")), {2}),
    (EV(window=W("before", 31)), {1, 4}),  # strictly before: 31 days ago exactly is out
    (EV(window=W("after", 2)), {1}),
    (EV(window=W("before", "2024-01-01")), {4}),
    (EV(window=W("after", "2024-05-16T12:00:00Z")), {1}),
    (EV(window=W("between", 10, value2=30)), {1, 2}),
    (EV(window=W("between", 30, value2=10)), {1, 2}),
    (EV(window=W("between", "2024-05-01", value2="2024-05-16T12:00:00")), {1, 2}),
    (EV(window=W("within", 30), count_operator="exactly", count_value=0), {3, 4, 5}),
    (EV(window=W("within", 30), count_operator="at_most", count_value=1), {2, 3, 4, 5}),
    (EV(window=W("within", 30), count_operator="between", count_value=1, count_value2=2), {2}),
    (EV("orders", window=W("within", 7)), {1, 2, 5}),
    (NOT(EV(window=W("within", 30))), {3, 4, 5}),
]  # fmt: skip
TRAIT_CASES = [
    (TR("order_count", "equals", 0), {3, 4}),
    (TR("order_count", "greater_than_or_equal", 2), {1, 2}),
    (TR("order_count", "less_than", 1), {3, 4}),
    (TR("total_spend", "greater_than", 50), {1, 2}),
    (TR("total_spend", "is_null"), {3, 4}),
    (NOT(TR("total_spend", "greater_than", 50)), {3, 4, 5}),
    (TR("avg_amount", "between", [7, 30]), {1, 5}),
    (TR("max_amount", "equals", 200), {2}),
    (TR("first_order_at", "greater_than", "2024-05-01"), {1, 5}),
    (TR("n_categories", "equals", 2), {1, 2}),
    (TR("books_count", "equals", 0), {3, 4}),
    (TR("books_count", "greater_than_or_equal", 2), {2}),
    (TR("fav_count", "equals", 0), {3, 5}),
    (TR("last_category", "equals", "books"), {1, 2, 5}),
    (TR("last_category", "contains", "ook"), {1, 2, 5}),
    (TR("last_category", "is_null"), {3, 4}),
    (TR("first_event", "equals", "purchase"), {1}),
    (TR("first_event", "in", ["view", "click"]), {2, 4}),
    (TR("age_next", "greater_than", 40), {2, 5}),
    (TR("avg_order", "greater_than", 29.5), {1, 2}),
    (TR("avg_order", "less_than", 10), {5}),
    (TR("big_spender", "is_true"), {1, 2}),
    (TR("big_spender", "is_false"), {5}),
    (NOT(TR("big_spender", "is_true")), {3, 4, 5}),
]
AUDIENCE_CASES = [
    (AUD("adults"), {1, 2, 5}),
    (AUD("adults", "is_not_member"), {3, 4}),
    (AUD("adult_buyers"), {1, 2, 5}),
    (AUD("not_vip"), {2, 3, 5}),
    (AUD("not_vip", "is_not_member"), {1, 4}),
    (AND(AUD("adults"), AUD("not_vip")), {2, 5}),
    (NOT(AUD("adults")), {3, 4}),
]
CASES = [
    pytest.param(tree, expected, id=f"{group}-{i}")
    for group, cases in [
        ("property", PROPERTY_CASES),
        ("group", GROUP_CASES),
        ("relation", RELATION_CASES),
        ("event", EVENT_CASES),
        ("trait", TRAIT_CASES),
        ("audience", AUDIENCE_CASES),
    ]
    for i, (tree, expected) in enumerate(cases)
]


@pytest.fixture(scope="module")
def con() -> Iterator[duckdb.DuckDBPyConnection]:
    connection = duckdb.connect()
    load_duckdb(connection, DATA)
    yield connection
    connection.close()


def members(con: duckdb.DuckDBPyConnection, tree: dict, parent: str = "customers") -> list:
    query = compile_members(tree, parent_model_id=parent, schema=SCHEMA, now=NOW)
    return [row[0] for row in con.sql(query.sql).fetchall()]


@pytest.mark.parametrize(("tree", "expected"), CASES)
def test_members(con: duckdb.DuckDBPyConnection, tree: dict, expected: set[int]) -> None:
    rows = members(con, tree)
    assert len(rows) == len(set(rows)), "a member was returned twice"
    assert set(rows) == expected
    count = compile_count(tree, parent_model_id="customers", schema=SCHEMA, now=NOW)
    assert con.sql(count.sql).fetchall() == [(len(expected),)]


@pytest.mark.parametrize(
    ("tree", "expected"),
    [
        (AND(), {1, 4}),
        (P("age", "greater_than", 20), {1}),
        (NOT(P("age", "greater_than", 20)), {4}),
    ],
)
def test_sql_parent_model(con: duckdb.DuckDBPyConnection, tree: dict, expected: set) -> None:
    assert set(members(con, tree, parent="de_customers")) == expected


def test_now_moves_relative_windows(con: duckdb.DuckDBPyConnection) -> None:
    tree = EV(window=W("within", 1))
    later = compile_members(tree, parent_model_id="customers", schema=SCHEMA, now=NOW + 2 * D)
    assert con.sql(later.sql).fetchall() == []
    earlier = compile_members(tree, parent_model_id="customers", schema=SCHEMA, now=NOW - 2 * D)
    assert "2024-06-12 12:00:00" in earlier.sql
