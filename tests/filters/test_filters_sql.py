"""SQL shape: dialect snapshots that parse back, previews, trait values, dependencies."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pytest
import sqlglot
from sqlglot import exp

from composable_dagster.filters import (
    DIALECTS,
    compile_count,
    compile_members,
    compile_preview,
    compile_trait_values,
    parse_filter_tree,
    referenced_ids,
    referenced_model_ids,
)
from composable_dagster.filters.timewindow import add_months, window_bounds
from composable_dagster.filters.tree import TimeWindow
from tests.filters.filters_catalog import NOW, TRAITS
from tests.filters.test_filters_semantics import (
    AND,
    AUD,
    DATA,
    EV,
    NOT,
    OR,
    REL,
    SCHEMA,
    TR,
    P,
    W,
)

SNAPSHOTS = Path(__file__).parent / "snapshots"
TREE = AND(
    P("email", "ends_with", "@gmail.com"),
    P("name", "contains", "50%_off"),
    OR(P("age", "between", [18, 30]), NOT(P("country", "in", ["DE", "FR"]))),
    REL("orders", P("category", "equals", "books"), count_value=2),
    NOT(REL("orders", count_operator="at_most", count_value=1)),
    EV(window=W("within", 30), filters=P("event_type", "equals", "purchase"), count_value=3),
    REL("favorites", P("brand", "equals", "x"), quantifier="all"),
    TR("avg_order", "greater_than", 10),
    AUD("adults", "is_not_member"),
)


@pytest.mark.parametrize("dialect", ["snowflake", "bigquery", "databricks", "postgres", "duckdb"])
def test_dialect_snapshot(dialect: str) -> None:
    query = compile_members(TREE, parent_model_id="customers", schema=SCHEMA, now=NOW,
                            dialect=dialect)  # fmt: skip
    pretty = query.expression.sql(dialect=dialect, pretty=True) + "\n"
    snapshot = SNAPSHOTS / f"members_{dialect}.sql"
    assert pretty == snapshot.read_text(), f"snapshot {snapshot.name} changed"
    reparsed = sqlglot.parse_one(query.sql, read=dialect)
    assert isinstance(reparsed, exp.Select)
    assert reparsed.sql(dialect=dialect) == query.sql  # round trip is stable
    assert [s.alias_or_name for s in reparsed.selects] == ["entity_key"]
    # user values are literals, never spliced SQL; the wildcard stays literal
    assert "'50%_off'" in query.sql
    assert "HAVING COUNT(*) >= 2" in query.sql
    assert " LIKE " not in query.sql


@pytest.mark.parametrize(
    ("dialect", "fragments"),
    [
        ("snowflake", ['"main"."customers" AS p', "CHARINDEX('50%_off', p.\"name\") > 0",
                       "RIGHT(p.\"email\", 10) = '@gmail.com'",
                       "CAST('2024-05-16 12:00:00' AS TIMESTAMP)"]),
        ("bigquery", ["`main`.`customers` AS p", "INSTR(p.`name`, '50%_off') > 0",
                      "CAST('2024-05-16 12:00:00' AS DATETIME)"]),
        ("databricks", ["`main`.`customers` AS p", "LOCATE('50%_off', p.`name`) > 0"]),
        ("postgres", ["POSITION('50%_off' IN p.\"name\") > 0",
                      "CAST(f"]),
        ("duckdb", ["CONTAINS(p.\"name\", '50%_off')", "ENDS_WITH(p.\"email\", '@gmail.com')"]),
    ],
)  # fmt: skip
def test_dialect_fragments(dialect: str, fragments: list[str]) -> None:
    sql = compile_members(TREE, parent_model_id="customers", schema=SCHEMA, now=NOW,
                          dialect=dialect).sql  # fmt: skip
    for fragment in fragments:
        assert fragment in sql, fragment


def test_postgres_negations_are_anti_joins() -> None:
    tree = AND(NOT(REL("orders")), REL("tickets", quantifier="none"))
    sql = compile_members(tree, parent_model_id="customers", schema=SCHEMA, now=NOW,
                          dialect="postgres").sql  # fmt: skip
    assert sql.count("NOT EXISTS") == 2
    assert "NOT IN" not in sql and " IN (" not in sql
    # subqueries never yield NULL keys, so NOT IN elsewhere cannot turn empty
    assert sql.count("IS NULL") >= 2


def test_deterministic_and_pure() -> None:
    a = compile_members(TREE, parent_model_id="customers", schema=SCHEMA, now=NOW)
    b = compile_members(TREE, parent_model_id="customers", schema=SCHEMA, now=NOW)
    assert a.sql == b.sql
    aware = datetime(2024, 6, 15, 14, 0, tzinfo=UTC).astimezone()
    c = compile_members(TREE, parent_model_id="customers", schema=SCHEMA, now=aware)
    assert "2024-05-16 14:00:00" in c.sql


def test_quotes_in_values_are_literals() -> None:
    con = duckdb.connect()
    from tests.filters.filters_catalog import load_duckdb

    load_duckdb(con, {**DATA, "customers": [{**DATA["customers"][0], "name": "O'Brien\"; --"}]})
    tree = P("name", "equals", "O'Brien\"; --")
    sql = compile_members(tree, parent_model_id="customers", schema=SCHEMA, now=NOW).sql
    assert con.sql(sql).fetchall() == [(1,)]


@pytest.fixture(scope="module")
def con():
    from tests.filters.filters_catalog import load_duckdb

    connection = duckdb.connect()
    load_duckdb(connection, DATA)
    yield connection
    connection.close()


def test_preview_defaults(con) -> None:
    tree = AND(
        P("country", "equals", "DE"),
        TR("order_count", "greater_than_or_equal", 0),
        P("vip", "is_true"),
        REL("orders", TR("order_count", "equals", 1)) if False else AND(),
    )
    query = compile_preview(tree, parent_model_id="customers", schema=SCHEMA, now=NOW)
    result = con.sql(query.sql)
    assert result.columns == ["id", "country", "vip", "name", "email", "age", "order_count"]
    assert result.fetchall() == [
        (1, "DE", True, "ann", "a@gmail.com", 30, 2),
        (4, "DE", True, "al%ce", "c@gmail.com", 18, 0),
    ]


def test_preview_columns_limit_and_slug_clash(con) -> None:
    tree = OR(TR("last_category", "is_not_null"), TR("age_next", "greater_than", 0))
    query = compile_preview(tree, parent_model_id="customers", schema=SCHEMA, now=NOW,
                            columns=["age", "id"], limit=500)  # fmt: skip
    assert "LIMIT 100" in query.sql
    rows = con.sql(query.sql)
    assert rows.columns == ["id", "age", "last_category", "age_next"]
    assert rows.fetchall()[0] == (1, 30, "books", 31)
    small = compile_preview(tree, parent_model_id="customers", schema=SCHEMA, now=NOW, limit=2)
    assert [r[0] for r in con.sql(small.sql).fetchall()] == [1, 2]


@pytest.mark.parametrize(
    ("slug", "expected"),
    [
        ("order_count", {1: 2, 2: 3, 3: 0, 4: 0, 5: 1}),
        ("total_spend", {1: 60, 2: 205, 3: None, 4: None, 5: 7}),
        ("n_categories", {1: 2, 2: 2, 3: 0, 4: 0, 5: 1}),
        ("fav_count", {1: 2, 2: 1, 3: 0, 4: 1, 5: 0}),
        ("last_category", {1: "books", 2: "books", 3: None, 4: None, 5: "books"}),
        ("first_event", {1: "purchase", 2: "view", 3: None, 4: "click", 5: None}),
        ("age_next", {1: 31, 2: 46, 3: None, 4: 19, 5: 66}),
        ("avg_order", {1: 30.0, 2: 205 / 3, 3: None, 4: None, 5: 7.0}),
        ("big_spender", {1: True, 2: True, 3: None, 4: None, 5: False}),
    ],
)
def test_trait_values(con, slug: str, expected: dict) -> None:
    query = compile_trait_values(TRAITS[slug], schema=SCHEMA)
    result = con.sql(query.sql)
    assert result.columns == ["entity_key", "value"]
    assert dict(result.fetchall()) == expected


def test_referenced_ids() -> None:
    tree = AND(REL("orders", REL("product")), TR("avg_order", "greater_than", 1),
               AUD("adult_buyers"), EV(filters=P("event_type", "is_null")))  # fmt: skip
    plain = referenced_ids(tree)
    assert plain.relationship_ids == {"orders", "product", "events"}
    assert plain.trait_ids == {"avg_order"}
    assert plain.audience_ids == {"adult_buyers"}
    assert plain.model_ids == frozenset()
    deep = referenced_ids(tree, parent_model_id="customers", schema=SCHEMA)
    assert deep.audience_ids == {"adult_buyers", "adults"}
    assert deep.trait_ids == {"avg_order", "total_spend", "order_count"}
    assert deep.model_ids == {"customers", "orders", "products", "events"}
    fav = referenced_model_ids(TR("fav_count", "equals", 1), parent_model_id="customers",
                               schema=SCHEMA)  # fmt: skip
    assert fav == {"customers", "favorites", "products"}


@pytest.mark.parametrize(
    ("start", "months", "expected"),
    [
        (datetime(2024, 3, 31, 8), -1, datetime(2024, 2, 29, 8)),
        (datetime(2023, 3, 31), -1, datetime(2023, 2, 28)),
        (datetime(2024, 1, 15), -1, datetime(2023, 12, 15)),
        (datetime(2024, 1, 31), -13, datetime(2022, 12, 31)),
        (datetime(2024, 5, 31), -6, datetime(2023, 11, 30)),
        (datetime(2024, 12, 31), 2, datetime(2025, 2, 28)),
        (datetime(2024, 6, 15), 0, datetime(2024, 6, 15)),
    ],
)
def test_month_arithmetic(start: datetime, months: int, expected: datetime) -> None:
    assert add_months(start, months) == expected


@pytest.mark.parametrize(
    ("window", "low", "high", "low_inc", "high_inc"),
    [
        (W("within", 2), datetime(2024, 6, 13, 12), NOW, True, True),
        (W("within", 3, "hours"), datetime(2024, 6, 15, 9), NOW, True, True),
        (W("within", 2, "weeks"), datetime(2024, 6, 1, 12), NOW, True, True),
        (W("within", 4, "months"), datetime(2024, 2, 15, 12), NOW, True, True),
        (W("not_within", 1), None, datetime(2024, 6, 14, 12), True, False),
        (W("before", 1), None, datetime(2024, 6, 14, 12), True, False),
        (W("after", 1), datetime(2024, 6, 14, 12), None, False, True),
        (W("before", "2024-01-02T03:04:05+01:00"), None, datetime(2024, 1, 2, 2, 4, 5), True,
         False),
        (W("between", 1, "days", 3), datetime(2024, 6, 12, 12), datetime(2024, 6, 14, 12), True,
         True),
        (W("between", "2024-02-01", "days", "2024-01-01"), datetime(2024, 1, 1),
         datetime(2024, 2, 1), True, True),
    ],
)  # fmt: skip
def test_window_bounds(window: dict, low, high, low_inc: bool, high_inc: bool) -> None:
    bounds = window_bounds(TimeWindow.model_validate(window), now=NOW, path="w")
    assert (bounds.low, bounds.high) == (low, high)
    if low is not None:
        assert bounds.low_inclusive is low_inc
    if high is not None:
        assert bounds.high_inclusive is high_inc


def test_count_statement_shape() -> None:
    query = compile_count(AND(), parent_model_id="customers", schema=SCHEMA, now=NOW,
                          dialect="snowflake")  # fmt: skip
    parsed = sqlglot.parse_one(query.sql, read="snowflake")
    assert [s.alias_or_name for s in parsed.selects] == ["estimated_size"]


def test_parse_roundtrip_types() -> None:
    node = parse_filter_tree(TREE)
    assert parse_filter_tree(node) is node
    assert set(DIALECTS) == {"duckdb", "postgres", "snowflake", "bigquery", "databricks"}
