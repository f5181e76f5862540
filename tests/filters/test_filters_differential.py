"""Differential property test: compiled SQL on DuckDB and PostgreSQL vs the reference.

Each hypothesis example is one random dataset (with NULLs, dangling and NULL foreign keys,
boundary timestamps, DECIMAL and BIGINT edge values) and a batch of random trees over every
condition type, numbers past the column types' ranges included. Part of each batch is drawn
from `negated_mix`: `not` over and/or groups that mix property conditions with relation,
event, trait and audience conditions, where PostgreSQL's NOT EXISTS rewrite once dropped a
conjunct. The dataset is loaded once per example into both engines; every tree's member set
must equal the pure Python evaluator's.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import duckdb
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from composable_dagster.filters import AudienceDef, compile_count, compile_members
from tests.filters.filters_catalog import NOW, TABLES, load_duckdb, load_postgres, make_schema
from tests.filters.filters_reference import Reference


def _audience(audience_id: str, tree: dict[str, Any]) -> AudienceDef:
    return AudienceDef(audience_id, audience_id, "customers", tree)


def _condition(**kw: Any) -> dict[str, Any]:
    return {"type": "condition", **kw}


# Audiences shaped and(A, condition) with A one conjunct: `is_not_member` of them once lost A.
MIXED_AUDIENCES = {
    a.id: a
    for a in (
        _audience("nameless_buyers", {"type": "and", "children": [
            _condition(condition_type="property", column="name", operator="is_null"),
            _condition(condition_type="relation", relationship_id="orders")]}),
        _audience("buyers_with_events", {"type": "and", "children": [
            _condition(condition_type="relation", relationship_id="orders"),
            _condition(condition_type="event", relationship_id="events")]}),
        _audience("first_or_counted", {"type": "and", "children": [
            _condition(condition_type="property", column="id", operator="equals", value=1),
            _condition(condition_type="trait", trait_id="order_count", operator="less_than",
                       value=2)]}),
    )
}  # fmt: skip
SCHEMA = make_schema(extra_audiences=MIXED_AUDIENCES)
AUDIENCE_IDS = ["adults", "adult_buyers", "not_vip", *MIXED_AUDIENCES]
SQL_TRAITS = {"age_next": lambda r: None if r["age"] is None else r["age"] + 1}
TREES_PER_DATASET = 10
MIXED_PER_DATASET = 2  # of TREES_PER_DATASET, from `negated_mix`
# Numbers past BIGINT, DECIMAL(18,2) and REAL ranges (the catalog gives each column its type).
_HUGE = [10**40, 1e40, -(10**40), 2**63, -(2**63) - 1, 10**16]

# -- datasets ------------------------------------------------------------------------------

_TIMES = [
    NOW,
    NOW - timedelta(hours=1),
    NOW - timedelta(hours=23),
    NOW - timedelta(days=1),
    NOW - timedelta(days=7),
    NOW - timedelta(days=10),
    NOW - timedelta(days=30),
    NOW - timedelta(days=31),
    datetime(2024, 5, 15, 12, 0, 0),  # exactly one calendar month before NOW
    NOW - timedelta(days=90),
    NOW - timedelta(days=400),
    NOW + timedelta(days=1),
    datetime(2024, 1, 1),
    None,
]


def make_dataset(rng: random.Random) -> dict[str, list[dict[str, Any]]]:
    def pick(options: list[Any]) -> Any:
        return rng.choice(options)

    n_customers = rng.choice([0, 1, *range(3, 15)])
    ids = list(range(1, n_customers + 1))
    customers = [
        {
            "id": i,
            "name": pick(["ann", "Ann", "bob", "al%ce", "x_y", "", None]),
            "email": pick(["a@gmail.com", "b@GMAIL.com", "c@yahoo.com", "d%@x.org", None]),
            "age": pick([None, 18, 25, 30, 41, 65]),
            "ltv": pick([None, 0.0, 10.5, 99.9, 1000.0]),
            "vip": pick([True, False, None]),
            "signup_at": pick(_TIMES),
            "country": pick(["DE", "FR", "US", None]),
            "account_id": pick([None, 1, 2, 3]),
            "balance": pick(
                [
                    None,
                    Decimal("0.00"),
                    Decimal("12.50"),
                    Decimal("-5.25"),
                    Decimal("9999999999999999.99"),
                    Decimal("-9999999999999999.99"),
                ]
            ),
        }
        for i in ids
    ]
    if ids and rng.random() < 0.2:
        customers.append({**customers[0], "id": None})  # a parent row without a key
    fks = [*ids, None, 999]
    orders = [
        {
            "order_id": k,
            "customer_id": pick(fks) if rng.random() < 0.3 else pick(ids or [None]),
            "product_id": pick([None, 1, 2, 3, 4, 9]),
            "amount": pick([None, 5, 10, 50, 200]),
            "category": pick(["books", "games", "toys", None]),
            "status": pick(["paid", "refunded"]),
            "created_at": pick(_TIMES),
        }
        for k in range(1, rng.randint(0, 30) + 1)
    ]
    events = [
        {
            "event_id": k,
            "customer_id": pick(fks) if rng.random() < 0.3 else pick(ids or [None]),
            "event_type": pick(["view", "click", "purchase", None]),
            "occurred_at": pick(_TIMES),
            "revenue": pick([None, 0, 3, 20]),
        }
        for k in range(1, rng.randint(0, 40) + 1)
    ]
    products = [
        {"product_id": k, "brand": pick(["x", "y", None]), "price": pick([None, 1, 20])}
        for k in range(1, 5)
    ]
    favorites = [
        {"customer_id": pick(fks), "product_id": pick([None, 1, 2, 3, 4, 9])}
        for _ in range(rng.randint(0, 15))
    ]
    tickets = [
        {
            "ticket_id": k,
            "account_id": pick([None, 1, 2, 4]),
            "priority": pick(["high", "low", None]),
        }
        for k in range(1, rng.randint(0, 8) + 1)
    ]
    return {
        "customers": customers,
        "orders": orders,
        "events": events,
        "products": products,
        "favorites": favorites,
        "tickets": tickets,
    }


# -- trees ---------------------------------------------------------------------------------

_TEXT_OPS = [
    "equals",
    "not_equals",
    "contains",
    "not_contains",
    "starts_with",
    "ends_with",
    "not_starts_with",
    "not_ends_with",
    "in",
    "not_in",
    "is_null",
    "is_not_null",
]
_NUM_OPS = [
    "equals",
    "not_equals",
    "greater_than",
    "less_than",
    "greater_than_or_equal",
    "less_than_or_equal",
    "between",
    "not_between",
    "in",
    "not_in",
    "is_null",
    "is_not_null",
]
_BOOL_OPS = ["is_true", "is_false", "equals", "not_equals", "is_null", "is_not_null"]
_TS_OPS = [
    "greater_than",
    "less_than",
    "greater_than_or_equal",
    "less_than_or_equal",
    "between",
    "not_between",
    "equals",
    "in",
    "is_null",
    "is_not_null",
]

_TS_VALUES = [
    "2024-05-16T12:00:00Z",
    "2024-01-01T00:00:00",
    "2024-06-14",
    "2023-01-01",
    "2024-06-15T12:00:00+00:00",
]

# model -> {column: (kind, value pool)}; the kind selects operators. The first pool value
# matches often, because hypothesis favours it.
PROPS: dict[str, dict[str, tuple[str, list[Any]]]] = {
    "customers": {
        "name": ("text", ["ann", "Ann", "a", "%", "_", "x_y", "al%ce", "n"]),
        "email": ("text", ["@gmail.com", "a@gmail.com", "%", "GMAIL", "c@", "org"]),
        "country": ("text", ["DE", "US", "FR", "X"]),
        "age": ("num", [30, 18, 25, 41, 65, 20, 50.5, *_HUGE]),
        "ltv": ("num", [10.5, 0, 99.9, 50, 1000, *_HUGE]),
        "account_id": ("num", [1, 2, 3, 0]),
        "balance": ("num", [12.5, 0, -5.25, 9999999999999999.99, *_HUGE]),
        "vip": ("bool", [True, False]),
        "signup_at": ("ts", _TS_VALUES),
    },
    "orders": {
        "category": ("text", ["books", "games", "toys", "oo", "s"]),
        "status": ("text", ["paid", "refunded", "pa", "d"]),
        "amount": ("num", [10, 5, 50, 200, 20]),
        "created_at": ("ts", _TS_VALUES),
        "product_id": ("num", [1, 2, 9]),
    },
    "events": {
        "event_type": ("text", ["view", "click", "purchase", "i"]),
        "revenue": ("num", [3, 0, 20, 10]),
        "occurred_at": ("ts", _TS_VALUES),
    },
    "products": {"brand": ("text", ["x", "y", "z"]), "price": ("num", [20, 1, 5])},
    "tickets": {"priority": ("text", ["high", "low", "h"])},
}
_COUNT_VALUES = [1, 0, 2, 3, 10, 50, 100, 2.5]
_STR_TRAIT = ["books", "games", "view", "click", "o"]
TRAIT_KINDS = {
    "order_count": ("num", _COUNT_VALUES),
    "total_spend": ("num", [50, 10, 0, 100, 260, *_HUGE]),
    "avg_amount": ("num", [10, 5, 27.5, 50, 100]),
    "max_amount": ("num", [50, 10, 200]),
    "first_order_at": ("ts", _TS_VALUES),
    "n_categories": ("num", _COUNT_VALUES),
    "books_count": ("num", _COUNT_VALUES),
    "fav_count": ("num", _COUNT_VALUES),
    "last_category": ("text", _STR_TRAIT),
    "first_event": ("text", _STR_TRAIT),
    "age_next": ("num", [31, 19, 26, 42]),
    "avg_order": ("num", [10, 5, 27.5, 50, 100]),
    "big_spender": ("bool", [True, False]),
}
# relations leaving a model: (relationship id, target model, is event)
RELATIONS = {
    "customers": [
        ("orders", "orders", False),
        ("favorites", "products", False),
        ("tickets", "tickets", False),
        ("events", "events", True),
        ("orders", "orders", True),
    ],
    "orders": [("product", "products", False)],
}


@st.composite
def comparison(draw: st.DrawFn, kind_pool: tuple[str, list[Any]]) -> dict[str, Any]:
    kind, pool = kind_pool
    ops = {"text": _TEXT_OPS, "num": _NUM_OPS, "bool": _BOOL_OPS, "ts": _TS_OPS}[kind]
    op = draw(st.sampled_from(ops))
    out: dict[str, Any] = {"operator": op}
    if op in ("is_null", "is_not_null", "is_true", "is_false"):
        return out
    if op in ("in", "not_in"):
        out["value"] = draw(st.lists(st.sampled_from(pool), min_size=1, max_size=3))
    elif op in ("between", "not_between"):
        lo, hi = draw(st.sampled_from(pool)), draw(st.sampled_from(pool))
        if draw(st.booleans()):
            out["value"] = [lo, hi]
        else:
            out["value"], out["value2"] = lo, hi
    else:
        value = draw(st.sampled_from(pool))
        out["value"] = value
    return out


@st.composite
def time_window(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["within", "not_within", "before", "after", "between"]))
    unit = draw(st.sampled_from(["hours", "days", "weeks", "months"]))
    absolute = kind in ("before", "after", "between") and draw(st.booleans())
    pool = st.sampled_from(_TS_VALUES) if absolute else st.sampled_from([0, 1, 7, 23, 30])
    out = {"type": kind, "unit": unit, "value": draw(pool)}
    if kind == "between":
        out["value2"] = draw(pool)
    return out


@st.composite
def counts(draw: st.DrawFn) -> dict[str, Any]:
    if draw(st.booleans()):
        return {}  # defaults: at_least 1
    op = draw(st.sampled_from(["at_least", "at_most", "exactly", "between"]))
    out = {"count_operator": op, "count_value": draw(st.integers(0, 3))}
    if op == "between":
        out["count_value2"] = out["count_value"] + draw(st.integers(0, 2))
    return out


def leaf_kinds(model: str, depth: int) -> dict[str, st.SearchStrategy[dict[str, Any]]]:
    """One strategy per condition type that applies on `model`."""
    kinds = {
        "property": st.sampled_from(sorted(PROPS[model].items())).flatmap(
            lambda ck: comparison(ck[1]).map(
                lambda c, col=ck[0]: {
                    "type": "condition",
                    "condition_type": "property",
                    "column": col,
                    **c,
                }
            )
        )
    }
    if model == "customers":
        kinds["trait"] = st.sampled_from(sorted(TRAIT_KINDS.items())).flatmap(
            lambda tk: comparison(tk[1]).map(
                lambda c, tid=tk[0]: {
                    "type": "condition",
                    "condition_type": "trait",
                    "trait_id": tid,
                    **c,
                }
            )
        )
        kinds["audience"] = st.builds(
            lambda a, op: {
                "type": "condition",
                "condition_type": "audience",
                "audience_id": a,
                "operator": op,
            },
            st.sampled_from(AUDIENCE_IDS),
            st.sampled_from(["is_member", "is_not_member"]),
        )
    if model in RELATIONS:
        kinds["relation"] = st.sampled_from(RELATIONS[model]).flatmap(
            lambda r: related(*r, depth=depth)
        )
    return kinds


def leaf(model: str, depth: int) -> st.SearchStrategy[dict[str, Any]]:
    kinds = leaf_kinds(model, depth)
    options = list(kinds.values())
    if "relation" in kinds:  # weights: relations and properties first
        options += [kinds["relation"], kinds["property"]]
    return st.one_of(options)


@st.composite
def related(draw: st.DrawFn, rel_id: str, target: str, is_event: bool, *, depth: int):
    node: dict[str, Any] = {"type": "condition", "relationship_id": rel_id}
    if is_event:
        node["condition_type"] = "event"
        node.update(draw(counts()))
        if draw(st.booleans()):
            node["time_window"] = draw(time_window())
    else:
        node["condition_type"] = "relation"
        quantifier = draw(st.sampled_from(["any", "any", "all", "none", None]))
        if quantifier:
            node["quantifier"] = quantifier
        node.update(draw(counts()))
    if depth > 0 and draw(st.booleans()):
        node["filters"] = draw(tree(target, depth - 1))
    return node


def tree(model: str, depth: int) -> st.SearchStrategy[dict[str, Any]]:
    if depth <= 0:
        return leaf(model, 0)
    child = st.deferred(lambda: tree(model, depth - 1))
    groups = st.one_of(
        st.builds(lambda cs: {"type": "and", "children": cs}, st.lists(child, max_size=3)),
        st.builds(lambda cs: {"type": "or", "children": cs}, st.lists(child, max_size=3)),
        st.builds(lambda c: {"type": "not", "children": [c]}, child),
    )
    return st.one_of(leaf(model, depth), groups)


def one_conjunct_property() -> st.SearchStrategy[dict[str, Any]]:
    """A customers property condition that stays one conjunct under `not`: a null check
    (never NULL itself) or a comparison on the primary key (known non-NULL)."""
    null_check = st.builds(
        lambda column, op: {"type": "condition", "condition_type": "property",
                            "column": column, "operator": op},
        st.sampled_from(sorted(PROPS["customers"])),
        st.sampled_from(["is_null", "is_not_null"]),
    )  # fmt: skip
    on_key = comparison(("num", [1, 2, 3, 0])).map(
        lambda c: {"type": "condition", "condition_type": "property", "column": "id", **c}
    )
    return st.one_of(null_check, on_key)


def set_condition() -> st.SearchStrategy[dict[str, Any]]:
    """A relation, event, trait or audience condition on customers."""
    kinds = leaf_kinds("customers", 1)
    return st.one_of(kinds["relation"], kinds["trait"], kinds["audience"])


@st.composite
def negated_mix(draw: st.DrawFn) -> dict[str, Any]:
    """`not(and|or(...))` mixing property and set conditions, or `is_not_member` of an
    audience of that shape, at the root or as a top-level conjunct: where PostgreSQL's
    WHERE conjuncts are rewritten to NOT EXISTS."""
    shape = draw(st.sampled_from(["not", "not_conjunct", "member", "member_conjunct"]))
    if shape.startswith("member"):
        audience_id = draw(st.sampled_from(sorted(MIXED_AUDIENCES)))
        negated = _condition(
            condition_type="audience", audience_id=audience_id, operator="is_not_member"
        )
    else:
        children = [
            draw(set_condition()),
            draw(st.one_of(one_conjunct_property(), leaf("customers", 0))),
        ]
        if draw(st.booleans()):
            children.append(draw(st.one_of(set_condition(), one_conjunct_property())))
        group = {"type": draw(st.sampled_from(["and", "and", "or"])), "children": children}
        group["children"] = draw(st.permutations(children))
        negated = {"type": "not", "children": [group]}
    if shape.endswith("conjunct"):
        other = draw(st.one_of(one_conjunct_property(), leaf("customers", 0)))
        return {"type": "and", "children": draw(st.permutations([negated, other]))}
    return negated


# -- the test ------------------------------------------------------------------------------


@pytest.fixture
def pg_conn(pg_url: str):
    conn = psycopg.connect(pg_url.replace("postgresql+psycopg://", "postgresql://"))
    try:
        yield conn
    finally:
        conn.close()


@settings(
    max_examples=50,
    deadline=None,
    derandomize=True,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
@given(
    seed=st.integers(0, 2**32 - 1),
    random_trees=st.lists(
        tree("customers", 3),
        min_size=TREES_PER_DATASET - MIXED_PER_DATASET,
        max_size=TREES_PER_DATASET - MIXED_PER_DATASET,
    ),
    mixed_trees=st.lists(negated_mix(), min_size=MIXED_PER_DATASET, max_size=MIXED_PER_DATASET),
)
def test_compiled_sql_matches_reference(
    pg_conn: Any, seed: int, random_trees: list, mixed_trees: list
) -> None:
    trees = random_trees + mixed_trees
    data = make_dataset(random.Random(seed))
    con = duckdb.connect()
    load_duckdb(con, data)
    load_postgres(pg_conn, data)
    ref = Reference(SCHEMA, data, now=NOW, sql_traits=SQL_TRAITS)
    for filter_tree in trees:
        expected = ref.members(filter_tree, "customers")
        duck = compile_members(filter_tree, parent_model_id="customers", schema=SCHEMA, now=NOW)
        duck_rows = [r[0] for r in con.sql(duck.sql).fetchall()]
        assert len(duck_rows) == len(set(duck_rows)), duck.sql
        assert set(duck_rows) == expected, (filter_tree, duck.sql)
        pg = compile_members(
            filter_tree, parent_model_id="customers", schema=SCHEMA, now=NOW, dialect="postgres"
        )
        with pg_conn.cursor() as cur:
            cur.execute(pg.sql)
            pg_rows = [r[0] for r in cur.fetchall()]
        pg_conn.rollback()
        assert len(pg_rows) == len(set(pg_rows)), pg.sql
        assert set(pg_rows) == expected, (filter_tree, pg.sql)
        count = compile_count(filter_tree, parent_model_id="customers", schema=SCHEMA, now=NOW)
        assert con.sql(count.sql).fetchall() == [(len(expected),)]
    con.close()


def test_tables_cover_catalog() -> None:
    assert set(TABLES) == set(SCHEMA.models)
