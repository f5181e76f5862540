"""The API end to end over a real PostgreSQL warehouse (the catalog stays on SQLite).

Every other API module reads a DuckDB file; this one checks the promise "any SQLAlchemy
warehouse" on PostgreSQL, where compiled SQL reaches psycopg as text: a `%` in it (a needle,
a `LIKE '%x%'` or a modulo in a SQL model) must not be read as a placeholder.

The rows are generated from their index, so every expected count is computed here in Python
from the same rows that were inserted.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from composable_dagster.settings import Settings
from composable_dagster.warehouse import Warehouse

from .conftest import Tenant
from .conftest import post_ok as _post

Row = Mapping[str, Any]

DOMAINS = ("gmail.com", "yahoo.com", "outlook.com", "gmail.co.uk", "example.org")
COUNTRIES = ("US", "GB", "DE", "FR")
NOTES = ("promo 50% off", "churn_risk", "loyal")
CATEGORIES = ("electronics", "books", "garden")
EVENT_TYPES = ("page_view", "purchase")


def _customer(i: int) -> dict[str, Any]:
    local = "vip" if i % 7 == 0 else "user"
    return {
        "customer_id": f"C{i:03d}",
        "email": None if i % 13 == 0 else f"{local}.{i}@{DOMAINS[i % 5]}",
        "country": COUNTRIES[i % 4],
        "age": 18 + i % 60,
        "lifetime_value": None if i % 11 == 0 else (i * 37) % 1000 + (i % 4) * 0.25,
        "note": None if i % 4 == 0 else NOTES[i % 3],
        "signup_at": datetime(2024, 1, 1) + timedelta(hours=7 * i),
    }


CUSTOMERS = tuple(_customer(i) for i in range(1, 301))
ORDERS = tuple(
    {"order_id": f"O{i:03d}-{j}", "customer_id": f"C{i:03d}",
     "category": CATEGORIES[(i + j) % 3], "amount": 5.0 * (j + 1) + i % 10}
    for i in range(1, 301) for j in range(i % 4)
)  # fmt: skip
# Offsets 0..59 days from May 1st: some purchases fall exactly on 2024-06-01 00:00, which
# the strict `after` window below must leave out (customer C031's only event is one).
EVENTS = tuple(
    {"event_id": f"E{i:03d}-{k}", "customer_id": f"C{i:03d}",
     "event_type": EVENT_TYPES[(i + k) % 2],
     "occurred_at": datetime(2024, 5, 1) + timedelta(days=(i + k * 17) % 60)}
    for i in range(1, 301) for k in range(i % 3)
)  # fmt: skip

WAREHOUSE_DDL = (
    "CREATE SCHEMA analytics",
    """CREATE TABLE analytics.customers (
        customer_id TEXT PRIMARY KEY, email TEXT, country VARCHAR(2) NOT NULL, age INTEGER,
        lifetime_value DOUBLE PRECISION, note TEXT, signup_at TIMESTAMP)""",
    """CREATE TABLE analytics.orders (
        order_id TEXT PRIMARY KEY, customer_id TEXT, category TEXT, amount NUMERIC(10, 2))""",
    """CREATE TABLE analytics.events (
        event_id TEXT PRIMARY KEY, customer_id TEXT, event_type TEXT, occurred_at TIMESTAMP)""",
)


def _insert(table: str, rows: tuple[dict[str, Any], ...]) -> sa.TextClause:
    names = list(rows[0])
    values = ", ".join(f":{n}" for n in names)
    return sa.text(f"INSERT INTO analytics.{table} ({', '.join(names)}) VALUES ({values})")


@pytest.fixture
def catalog_url(tmp_path: Path) -> str:
    """Only SQLite: the PostgreSQL database of this test is the warehouse."""
    return f"sqlite:///{tmp_path / 'catalog.sqlite'}"


@pytest.fixture
def warehouse_url(pg_url: str) -> Iterator[str]:
    """Overrides the shared DuckDB warehouse with the test's PostgreSQL database."""
    engine = sa.create_engine(pg_url)
    with engine.begin() as conn:
        for statement in WAREHOUSE_DDL:
            conn.execute(sa.text(statement))
        for table, rows in (("customers", CUSTOMERS), ("orders", ORDERS), ("events", EVENTS)):
            conn.execute(_insert(table, rows), list(rows))
    engine.dispose()
    yield pg_url
    # The API's engine is cached per URL (and timeout); close its pooled connections before
    # the DROP.
    timeout = Settings.model_fields["sql_timeout_seconds"].default
    Warehouse(pg_url, sql_timeout_seconds=timeout).engine.dispose()


def P(column: str, operator: str, value: Any = None, value2: Any = None) -> dict:
    condition = {"type": "condition", "condition_type": "property", "column": column,
                 "operator": operator}  # fmt: skip
    if value is not None:
        condition["value"] = value
    if value2 is not None:
        condition["value2"] = value2
    return condition


def AND(*children: dict) -> dict:
    return {"type": "and", "children": list(children)}


def _orders_of(customer: Row, category: str) -> int:
    return sum(
        1
        for o in ORDERS
        if o["customer_id"] == customer["customer_id"] and o["category"] == category
    )


def _purchases_after(customer: Row, moment: datetime) -> int:
    return sum(
        1
        for e in EVENTS
        if e["customer_id"] == customer["customer_id"]
        and e["event_type"] == "purchase"
        and e["occurred_at"] > moment
    )


def _has(value: str | None, needle: str) -> bool:
    return value is not None and needle in value


# (name, tree builder from the catalog ids, the same filter written in Python). NULL never
# matches a comparison; `not` of a condition does match it (tests/filters semantics).
CASES: tuple[tuple[str, Callable[[dict[str, str]], dict], Callable[[Row], bool]], ...] = (
    ("contains gmail", lambda ids: AND(P("email", "contains", "gmail")),
     lambda c: _has(c["email"], "gmail")),
    ("contains a literal %", lambda ids: AND(P("note", "contains", "%")),
     lambda c: _has(c["note"], "%")),
    ("contains a literal _", lambda ids: AND(P("note", "contains", "n_r")),
     lambda c: _has(c["note"], "n_r")),
    ("ends_with", lambda ids: AND(P("email", "ends_with", "@gmail.com")),
     lambda c: c["email"] is not None and c["email"].endswith("@gmail.com")),
    ("starts_with", lambda ids: AND(P("email", "starts_with", "vip.")),
     lambda c: c["email"] is not None and c["email"].startswith("vip.")),
    ("not_ends_with", lambda ids: AND(P("email", "not_ends_with", ".com")),
     lambda c: c["email"] is not None and not c["email"].endswith(".com")),
    ("not of contains", lambda ids: {"type": "not", "children": [P("email", "contains", "gmail")]},
     lambda c: not _has(c["email"], "gmail")),
    ("equals", lambda ids: AND(P("country", "equals", "US")), lambda c: c["country"] == "US"),
    ("between, edges included", lambda ids: AND(P("age", "between", 30, 40)),
     lambda c: 30 <= c["age"] <= 40),
    ("between floats", lambda ids: AND(P("lifetime_value", "between", [250, 500.5])),
     lambda c: c["lifetime_value"] is not None and 250 <= c["lifetime_value"] <= 500.5),
    ("between timestamps",
     # Both ends are signup times (customers 100 and 200).
     lambda ids: AND(P("signup_at", "between", "2024-01-30T04:00:00", "2024-02-28T08:00:00")),
     lambda c: datetime(2024, 1, 30, 4) <= c["signup_at"] <= datetime(2024, 2, 28, 8)),
    ("is_null text", lambda ids: AND(P("note", "is_null")), lambda c: c["note"] is None),
    ("is_null number", lambda ids: AND(P("lifetime_value", "is_null")),
     lambda c: c["lifetime_value"] is None),
    ("or", lambda ids: {"type": "or", "children": [P("email", "ends_with", ".org"),
                                                   P("email", "starts_with", "vip.")]},
     lambda c: c["email"] is not None
     and (c["email"].endswith(".org") or c["email"].startswith("vip."))),
    ("relation: 2+ orders outside garden",
     lambda ids: AND({"type": "condition", "condition_type": "relation",
                      "relationship_id": ids["customer_orders"], "count_operator": "at_least",
                      "count_value": 2,
                      "filters": AND(P("category", "not_equals", "garden"))}),
     lambda c: _orders_of(c, "electronics") + _orders_of(c, "books") >= 2),
    ("event: a purchase after June 1st",
     lambda ids: AND({"type": "condition", "condition_type": "event",
                      "relationship_id": ids["customer_events"], "count_operator": "at_least",
                      "count_value": 1, "filters": AND(P("event_type", "equals", "purchase")),
                      "time_window": {"type": "after", "value": "2024-06-01T00:00:00"}}),
     lambda c: _purchases_after(c, datetime(2024, 6, 1)) >= 1),
    ("and of several",
     lambda ids: AND(P("email", "contains", "gmail"), P("note", "contains", "%"),
                     P("age", "between", 20, 60)),
     lambda c: _has(c["email"], "gmail") and _has(c["note"], "%") and 20 <= c["age"] <= 60),
)  # fmt: skip


def test_table_models_discover_postgres_columns(
    client: TestClient, tenant: Tenant, catalog: dict[str, str]
) -> None:
    customers = client.get(tenant.url(f"/models/{catalog['customers']}"), headers=tenant.headers)
    assert customers.status_code == 200, customers.text
    assert customers.json()["status"] == "active"
    # PostgreSQL's own spelling (information_schema.columns.data_type).
    assert customers.json()["columns"] == [
        {"name": "customer_id", "type": "text", "nullable": False},
        {"name": "email", "type": "text", "nullable": True},
        {"name": "country", "type": "character varying", "nullable": False},
        {"name": "age", "type": "integer", "nullable": True},
        {"name": "lifetime_value", "type": "double precision", "nullable": True},
        {"name": "note", "type": "text", "nullable": True},
        {"name": "signup_at", "type": "timestamp without time zone", "nullable": True},
    ]
    orders = client.get(tenant.url(f"/models/{catalog['orders']}"), headers=tenant.headers)
    assert [(c["name"], c["type"]) for c in orders.json()["columns"]] == [
        ("order_id", "text"),
        ("customer_id", "text"),
        ("category", "text"),
        ("amount", "numeric"),
    ]


def test_estimate_filter_counts_match_the_rows(
    client: TestClient, tenant: Tenant, catalog: dict[str, str]
) -> None:
    expected = {name: sum(map(matches, CUSTOMERS)) for name, _, matches in CASES}
    # Each case selects a proper, non-empty subset, so a predicate that is ignored (all rows)
    # or never true (no rows) cannot pass.
    assert all(0 < n < len(CUSTOMERS) for n in expected.values()), expected
    counted = {}
    for mode in ("auto", "exact"):
        for name, tree, _ in CASES:
            response = client.post(
                tenant.url(f"/models/{catalog['customers']}/estimate-filter?mode={mode}"),
                json={"filter_tree": tree(catalog)},
                headers=tenant.headers,
            )
            assert response.status_code == 200, (mode, name, response.text)
            # 300 rows: `auto` samples only above 1M rows, so both answers are exact.
            assert response.json()["sampled"] is False, (mode, name)
            counted[name] = response.json()["estimated_size"]
        assert counted == expected, mode


def test_sql_model_with_like_and_modulo(
    client: TestClient, tenant: Tenant, catalog: dict[str, str]
) -> None:
    model = _post(client, tenant, "/models", {
        "name": "gmail buckets",
        "sql_query": "SELECT customer_id, email, age % 7 AS age_bucket, lifetime_value "
                     "FROM analytics.customers WHERE email LIKE '%@gmail%'",
        "primary_key_column": "customer_id",
    })  # fmt: skip
    assert model["model_type"] == "sql"
    # Types of the result columns, read back with format_type().
    assert model["columns"] == [
        {"name": "customer_id", "type": "text", "nullable": True},
        {"name": "email", "type": "text", "nullable": True},
        {"name": "age_bucket", "type": "integer", "nullable": True},
        {"name": "lifetime_value", "type": "double precision", "nullable": True},
    ]
    gmail = [c for c in CUSTOMERS if _has(c["email"], "@gmail")]
    cases = [
        (AND(), len(gmail)),
        (AND(P("age_bucket", "equals", 3)), sum(c["age"] % 7 == 3 for c in gmail)),
        (AND(P("email", "ends_with", ".co.uk"), P("age_bucket", "between", 2, 4)),
         sum(c["email"].endswith(".co.uk") and 2 <= c["age"] % 7 <= 4 for c in gmail)),
    ]  # fmt: skip
    counted = [
        _post(client, tenant, f"/models/{model['id']}/estimate-filter", {"filter_tree": tree})[
            "estimated_size"
        ]
        for tree, _ in cases
    ]
    assert counted == [n for _, n in cases]
    assert len(set(counted)) == len(counted)  # three different answers, not one reused


def test_audience_estimate_preview_and_explain(
    client: TestClient, tenant: Tenant, catalog: dict[str, str]
) -> None:
    order_count = {
        "type": "condition", "condition_type": "trait", "trait_id": catalog["order_count"],
        "operator": "greater_than_or_equal", "value": 1,
    }  # fmt: skip
    tree = AND(
        P("email", "contains", "gmail"),
        P("note", "contains", "%"),
        P("age", "between", 20, 60),
        order_count,
    )
    audience = _post(client, tenant, "/audiences", {
        "name": "gmail promo buyers", "parent_model_id": catalog["customers"],
        "filter_tree": tree,
    })  # fmt: skip
    orders = {c["customer_id"]: 0 for c in CUSTOMERS}
    for order in ORDERS:
        orders[order["customer_id"]] += 1
    members = [
        c
        for c in CUSTOMERS
        if _has(c["email"], "gmail")
        and _has(c["note"], "%")
        and 20 <= c["age"] <= 60
        and orders[c["customer_id"]] >= 1
    ]
    assert 0 < len(members) <= 100  # the preview below shows them all

    estimated = _post(client, tenant, f"/audiences/{audience['id']}/estimate", {})
    assert estimated["estimated_size"] == len(members)
    stored = client.get(tenant.url(f"/audiences/{audience['id']}"), headers=tenant.headers)
    assert stored.json()["estimated_size"] == len(members)

    preview = client.get(tenant.url(f"/audiences/{audience['id']}/preview"), headers=tenant.headers)
    assert preview.status_code == 200, preview.text
    # Key, the tree's columns, other columns up to five, then the trait under its slug.
    shown = ("customer_id", "email", "note", "age", "country", "lifetime_value")
    assert [(c["name"], c["type"], c["nullable"]) for c in preview.json()["columns"]] == [
        ("customer_id", "text", False),
        ("email", "text", True),
        ("note", "text", True),
        ("age", "integer", True),
        ("country", "character varying", False),
        ("lifetime_value", "double precision", True),
        ("order_count", "bigint", True),
    ]
    assert preview.json()["rows"] == [
        {**{k: c[k] for k in shown}, "order_count": orders[c["customer_id"]]} for c in members
    ]

    explained = _post(client, tenant, f"/audiences/{audience['id']}/explain", {})
    assert [(n["path"], n["type"], n["member_count"]) for n in explained["nodes"]] == [
        ("filter_tree", "and", len(members)),
        ("filter_tree.children[0]", "property", sum(_has(c["email"], "gmail") for c in CUSTOMERS)),
        ("filter_tree.children[1]", "property", sum(_has(c["note"], "%") for c in CUSTOMERS)),
        ("filter_tree.children[2]", "property", sum(20 <= c["age"] <= 60 for c in CUSTOMERS)),
        ("filter_tree.children[3]", "trait", sum(n >= 1 for n in orders.values())),
    ]


def test_preview_sql_with_like_and_modulo(client: TestClient, tenant: Tenant) -> None:
    preview = _post(client, tenant, "/models/preview", {
        "sql_query": "SELECT customer_id, age % 10 AS age_mod, email "
                     "FROM analytics.customers WHERE email LIKE '%yahoo%' "
                     "ORDER BY customer_id",
        "limit": 5,
    })  # fmt: skip
    assert preview["columns"] == [
        {"name": "customer_id", "type": "text", "nullable": True},
        {"name": "age_mod", "type": "integer", "nullable": True},
        {"name": "email", "type": "text", "nullable": True},
    ]
    yahoo = [c for c in CUSTOMERS if _has(c["email"], "yahoo")][:5]
    assert preview["rows"] == [
        {"customer_id": c["customer_id"], "age_mod": c["age"] % 10, "email": c["email"]}
        for c in yahoo
    ]

    grouped = _post(client, tenant, "/models/preview", {
        "sql_query": "SELECT split_part(email, '@', 2) AS domain, count(*) AS n "
                     "FROM analytics.customers WHERE email NOT LIKE '%.com' "
                     "GROUP BY 1 ORDER BY 1",
    })  # fmt: skip
    domains: dict[str, int] = {}
    for c in CUSTOMERS:
        if c["email"] is not None and not c["email"].endswith(".com"):
            domain = c["email"].split("@")[1]
            domains[domain] = domains.get(domain, 0) + 1
    assert grouped["rows"] == [{"domain": d, "n": n} for d, n in sorted(domains.items())]
