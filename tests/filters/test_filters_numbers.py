"""Numbers past a column type's range, on real DuckDB and PostgreSQL: every case must bind
(DuckDB refused `DECIMAL(18,2) < 10^40`, PostgreSQL `REAL IN (1e40, ...)`) and give the
exact answer (an integer past BIGINT compared as DOUBLE would make `2^63 = 2^63 - 1`)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import duckdb
import psycopg
import pytest
import sqlalchemy as sa

from composable_dagster.filters import (
    CatalogSchema,
    Column,
    ColumnType,
    EntityType,
    FilterError,
    ModelDef,
    compile_members,
)
from tests.filters.filters_catalog import NOW

# column -> (DuckDB type, PostgreSQL type)
TYPES = {
    "id": ("BIGINT", "BIGINT"),
    "dec": ("DECIMAL(18,2)", "NUMERIC(18,2)"),
    "big": ("BIGINT", "BIGINT"),
    "i32": ("INTEGER", "INTEGER"),
    "wide": ("DECIMAL(38,0)", "NUMERIC(38,0)"),
    "free": ("DOUBLE", "NUMERIC"),  # PostgreSQL's unbounded NUMERIC: exact with any literal
    "real": ("REAL", "REAL"),
    "dbl": ("DOUBLE", "DOUBLE PRECISION"),
}
MAX64, MIN64 = 2**63 - 1, -(2**63)
ROWS = [
    (1, Decimal("12.50"), 5, 5, 5, 5, 1.5, 1.5),
    (2, Decimal("-3.25"), MIN64, -(2**31), -(10**37), -1.5, -2.0, -1e300),
    (3, Decimal("9999999999999999.99"), MAX64, 2**31 - 1, 10**37, 7.25, 3.0e38, 1e300),
    (4, None, None, None, None, None, None, None),
]
E40 = 10**40


def P(column: str, operator: str, value: Any, **kw: Any) -> dict:
    return {"type": "condition", "condition_type": "property", "column": column,
            "operator": operator, "value": value, **kw}  # fmt: skip


CASES = [
    # DECIMAL(18,2): DuckDB could not cast an integer past DECIMAL(38, 2) to the column
    (P("dec", "less_than", 1e40), {1, 2, 3}),
    (P("dec", "less_than", E40), {1, 2, 3}),
    (P("dec", "greater_than", -E40), {1, 2, 3}),
    (P("dec", "less_than", 10**16), {1, 2, 3}),  # one cent past the largest value
    (P("dec", "greater_than_or_equal", 10**16), set()),
    (P("dec", "equals", E40), set()),
    (P("dec", "not_equals", E40), {1, 2, 3}),
    (P("dec", "in", [E40, 12.5]), {1}),
    (P("dec", "not_in", [E40, -E40]), {1, 2, 3}),
    (P("dec", "between", [-E40, 0]), {2}),
    (P("dec", "between", [0, 1e40]), {1, 3}),
    (P("dec", "not_between", [E40, 2 * E40]), {1, 2, 3}),
    ({"type": "not", "children": [P("dec", "less_than", E40)]}, {4}),
    # BIGINT and INTEGER: exact at the type's edges, where DOUBLE would round
    (P("big", "less_than", 2**63), {1, 2, 3}),
    (P("big", "equals", 2**63), set()),
    (P("big", "greater_than", MIN64 - 1), {1, 2, 3}),
    (P("big", "less_than_or_equal", MAX64), {1, 2, 3}),
    (P("big", "in", [2**63, 5]), {1}),
    (P("big", "between", [2**63, 10**30]), set()),
    (P("big", "not_between", [2**64, 10**30]), {1, 2, 3}),
    (P("big", "greater_than", 1e40), set()),
    (P("i32", "less_than", 2**31), {1, 2, 3}),
    (P("i32", "equals", 2**40), set()),
    (P("i32", "greater_than", -1e40), {1, 2, 3}),
    # DECIMAL(38,0): no wider DECIMAL holds the edge, so past-range numbers go DOUBLE
    (P("wide", "less_than", 10**38), {1, 2, 3}),
    (P("wide", "greater_than", 1e40), set()),
    (P("wide", "in", [10**37, E40]), {3}),
    # floating point: extreme numbers compare as DOUBLE; unbounded NUMERIC: exactly
    (P("free", "less_than", E40), {1, 2, 3}),
    (P("free", "in", [1e-40, 7.25]), {3}),
    (P("real", "in", [1e40, 1.5]), {1}),  # PostgreSQL typed the list REAL: out of range
    (P("real", "in", [1e-40, -2.0]), {2}),
    (P("real", "not_in", [-1e40, 3e39]), {1, 2, 3}),
    (P("real", "greater_than", 5e-324), {1, 3}),
    (P("dbl", "greater_than", E40), {3}),
    (P("dbl", "less_than", -(2**64)), {2}),
    (P("dbl", "in", [1e300, 5]), {3}),
]
# Numbers no engine takes: a 400 naming the value, on every column.
REFUSED = [
    (P("dec", "less_than", 10**400), "filter_tree.value", "number out of range"),
    (P("dbl", "in", [1, 10**309]), "filter_tree.value[1]", "number out of range"),
    (P("big", "equals", float("nan")), "filter_tree.value", "finite number"),
    (P("real", "between", [float("-inf"), 1]), "filter_tree.value[0]", "finite number"),
    (P("free", "not_between", 0, value2=float("inf")), "filter_tree.value2", "finite number"),
]


def _schema(dialect: str, schema: str) -> CatalogSchema:
    index = 0 if dialect == "duckdb" else 1
    columns = {
        name: Column(name, ColumnType.NUMBER, warehouse_type=types[index])
        for name, types in TYPES.items()
    }
    model = ModelDef(
        id="nums", name="nums", entity_type=EntityType.PARENT, primary_key="id",
        columns=columns, table=f"{schema}.nums",
    )  # fmt: skip
    return CatalogSchema(models={"nums": model})


def _ddl(schema: str, index: int) -> str:
    columns = ", ".join(f'"{name}" {types[index]}' for name, types in TYPES.items())
    return f"CREATE TABLE {schema}.nums ({columns})"


@pytest.fixture(scope="module")
def engines(pg_server_url: sa.URL) -> Iterator[dict[str, Any]]:
    """The rows in an in-memory DuckDB and in a fresh schema of the test PostgreSQL."""
    schema = f"nums_{uuid.uuid4().hex[:12]}"
    marks = ", ".join("?" for _ in TYPES)
    duck = duckdb.connect()
    duck.execute(f"CREATE SCHEMA {schema}")
    duck.execute(_ddl(schema, 0))
    duck.executemany(f"INSERT INTO {schema}.nums VALUES ({marks})", ROWS)
    dsn = pg_server_url.render_as_string(hide_password=False).replace("+psycopg", "")
    pg = psycopg.connect(dsn, autocommit=True)
    pg.execute(f"CREATE SCHEMA {schema}")
    pg.execute(_ddl(schema, 1))
    with pg.cursor() as cur:
        cur.executemany(
            f"INSERT INTO {schema}.nums VALUES ({', '.join('%s' for _ in TYPES)})", ROWS
        )
    try:
        yield {"schema": schema, "duckdb": duck, "postgres": pg}
    finally:
        pg.execute(f"DROP SCHEMA {schema} CASCADE")
        pg.close()
        duck.close()


def _members(engines: dict[str, Any], tree: dict, dialect: str) -> set[int]:
    query = compile_members(
        tree, parent_model_id="nums", schema=_schema(dialect, engines["schema"]), now=NOW,
        dialect=dialect,
    )  # fmt: skip
    return {row[0] for row in engines[dialect].execute(query.sql).fetchall()}


@pytest.mark.parametrize("dialect", ["duckdb", "postgres"])
@pytest.mark.parametrize(("tree", "expected"), CASES)
def test_numbers_past_a_type_compare_by_meaning(
    engines: dict[str, Any], dialect: str, tree: dict, expected: set[int]
) -> None:
    assert _members(engines, tree, dialect) == expected


@pytest.mark.parametrize("dialect", ["duckdb", "postgres"])
@pytest.mark.parametrize(("tree", "path", "fragment"), REFUSED)
def test_numbers_no_engine_takes_are_refused(
    dialect: str, tree: dict, path: str, fragment: str
) -> None:
    with pytest.raises(FilterError) as info:
        compile_members(
            tree, parent_model_id="nums", schema=_schema(dialect, "s"), now=NOW, dialect=dialect
        )
    assert (info.value.path, fragment in info.value.message) == (path, True), str(info.value)


def test_exact_edges_are_typed_literals() -> None:
    sql = compile_members(
        P("big", "less_than", 2**63), parent_model_id="nums", schema=_schema("duckdb", "s"),
        now=NOW,
    ).sql  # fmt: skip
    assert "CAST(9223372036854775808 AS DECIMAL(19, 0))" in sql
    sql = compile_members(
        P("dec", "in", [E40]), parent_model_id="nums", schema=_schema("postgres", "s"), now=NOW,
        dialect="postgres",
    ).sql  # fmt: skip
    assert "CAST(10000000000000000 AS DECIMAL(19, 2))" in sql
