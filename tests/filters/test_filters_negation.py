"""`not` over an AND that ends in a key set, on DuckDB and PostgreSQL, with known answers.

PostgreSQL writes a negated key set as NOT EXISTS. It took any two-part AND ending in an IN
for the NULL guard (`NOT (k IS NOT NULL AND k IN (...))`) and dropped its first part, so
`not(and(name is_null, relation orders))` meant "customers without orders".
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import duckdb
import psycopg
import pytest
import sqlalchemy as sa

from composable_dagster.filters import AudienceDef, compile_members
from tests.filters.filters_catalog import NOW, load_duckdb, load_postgres, make_schema
from tests.filters.test_filters_semantics import AND, AUD, EV, NOT, OR, REL, TR, P

# Customers 2 and 4 have no name; 1 and 2 have orders, 1 and 3 events, 1 and 4 tickets.
DATA = {
    "customers": [
        {"id": 1, "name": "ann", "age": 30, "account_id": 1},
        {"id": 2, "name": None, "age": 40, "account_id": 2},
        {"id": 3, "name": "cy", "age": None, "account_id": None},
        {"id": 4, "name": None, "age": None, "account_id": 1},
    ],
    "orders": [
        {"order_id": 1, "customer_id": 1, "category": "books", "status": "paid"},
        {"order_id": 2, "customer_id": 2, "category": None, "status": "paid"},
        {"order_id": 3, "customer_id": 2, "category": "toys", "status": "paid"},
        {"order_id": 4, "customer_id": None, "category": "toys", "status": "paid"},
        {"order_id": 5, "customer_id": 999, "category": "toys", "status": "paid"},
    ],
    "events": [
        {"event_id": 1, "customer_id": 1, "event_type": "view"},
        {"event_id": 2, "customer_id": 3, "event_type": "view"},
    ],
    "tickets": [{"ticket_id": 1, "account_id": 1, "priority": "high"}],
}
NAMELESS_BUYERS = AND(P("name", "is_null"), REL("orders"))
SCHEMA = make_schema(
    extra_audiences={
        "nameless_buyers": AudienceDef("nameless_buyers", "Nameless buyers", "customers",
                                       NAMELESS_BUYERS),
        "buyers_with_events": AudienceDef("buyers_with_events", "Buyers with events",
                                          "customers", AND(REL("orders"), EV())),
    }
)  # fmt: skip

CASES = [
    # the shape: the first conjunct is not a NULL guard
    (NOT(NAMELESS_BUYERS), {1, 3, 4}),
    (NOT(AND(P("name", "is_not_null"), REL("orders"))), {2, 3, 4}),  # guard of another key
    (NOT(AND(REL("orders"), EV())), {2, 3, 4}),
    (NOT(AND(P("id", "equals", 1), TR("order_count", "greater_than_or_equal", 1))), {2, 3, 4}),
    (NOT(AND(EV(), AUD("nameless_buyers"))), {1, 2, 3, 4}),
    (AUD("nameless_buyers", "is_not_member"), {1, 3, 4}),
    (AUD("buyers_with_events", "is_not_member"), {2, 3, 4}),
    (AND(AUD("nameless_buyers", "is_not_member"), P("age", "is_not_null")), {1}),
    (REL("orders", NOT(AND(P("category", "is_null"), P("status", "equals", "paid")))), {1, 2}),
    # real NULL guards, which NOT EXISTS may absorb, and an OR, which it must not touch
    (NOT(REL("tickets")), {2, 3}),
    (NOT(OR(P("name", "is_null"), REL("orders"))), {3}),
    (NOT(NOT(NAMELESS_BUYERS)), {2}),
]


@pytest.fixture(scope="module")
def engines(pg_server_url: sa.URL) -> Iterator[dict[str, Any]]:
    duck = duckdb.connect()
    load_duckdb(duck, DATA)
    dsn = pg_server_url.render_as_string(hide_password=False).replace("+psycopg", "")
    pg = psycopg.connect(dsn)
    schema = f"negation_{uuid.uuid4().hex[:12]}"
    pg.execute(f"CREATE SCHEMA {schema}")
    pg.execute(f"SET search_path TO {schema}")
    load_postgres(pg, DATA)
    try:
        yield {"duckdb": duck, "postgres": pg}
    finally:
        pg.rollback()
        pg.execute(f"DROP SCHEMA {schema} CASCADE")
        pg.commit()
        pg.close()
        duck.close()


@pytest.mark.parametrize("dialect", ["duckdb", "postgres"])
@pytest.mark.parametrize(("tree", "expected"), CASES)
def test_negated_conjunctions(
    engines: dict[str, Any], dialect: str, tree: dict, expected: set[int]
) -> None:
    sql = compile_members(tree, parent_model_id="customers", schema=SCHEMA, now=NOW,
                          dialect=dialect).sql  # fmt: skip
    rows = engines[dialect].execute(sql).fetchall()
    if dialect == "postgres":
        engines[dialect].rollback()
    assert {r[0] for r in rows} == expected, sql


def test_only_the_null_guard_becomes_an_anti_join() -> None:
    def pg(tree: dict) -> str:
        return compile_members(tree, parent_model_id="customers", schema=SCHEMA, now=NOW,
                               dialect="postgres").sql  # fmt: skip

    assert "NOT EXISTS" in pg(NOT(REL("tickets")))  # NOT (k IS NOT NULL AND k IN (...))
    assert "NOT EXISTS" in pg(NOT(REL("orders")))  # the key is the primary key: no guard
    assert "NOT EXISTS" not in pg(NOT(NAMELESS_BUYERS))
    assert "NOT EXISTS" not in pg(NOT(AND(P("age", "is_not_null"), REL("orders"))))
