"""A small CDP catalog (customers, orders, events, products, favorites, tickets) and loaders
that put the same rows into DuckDB and PostgreSQL. Shared by the filter tests."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from composable_dagster.filters import (
    AudienceDef,
    Cardinality,
    CatalogSchema,
    Column,
    ColumnType,
    EntityType,
    ModelDef,
    RelationshipDef,
    ResultType,
    TraitDef,
    TraitType,
)

NOW = datetime(2024, 6, 15, 12, 0, 0)

T, N, B, TS = ColumnType.TEXT, ColumnType.NUMBER, ColumnType.BOOLEAN, ColumnType.TIMESTAMP
# column type -> (duckdb type, postgres type)
SQL_TYPES = {
    T: ("VARCHAR", "TEXT"),
    N: ("BIGINT", "BIGINT"),
    B: ("BOOLEAN", "BOOLEAN"),
    TS: ("TIMESTAMP", "TIMESTAMP"),
    "double": ("DOUBLE", "DOUBLE PRECISION"),
    "decimal": ("DECIMAL(18,2)", "NUMERIC(18,2)"),
}


@dataclass(frozen=True)
class TableSpec:
    name: str
    columns: tuple[tuple[str, Any], ...]  # (name, ColumnType or "double")

    def column_type(self, name: str) -> ColumnType:
        kind = dict(self.columns)[name]
        return N if kind in ("double", "decimal") else kind


TABLES = {
    t.name: t
    for t in (
        TableSpec(
            "customers",
            (
                ("id", N),
                ("name", T),
                ("email", T),
                ("age", N),
                ("ltv", "double"),
                ("vip", B),
                ("signup_at", TS),
                ("country", T),
                ("account_id", N),
                ("balance", "decimal"),
            ),
        ),
        TableSpec(
            "orders",
            (
                ("order_id", N),
                ("customer_id", N),
                ("product_id", N),
                ("amount", N),
                ("category", T),
                ("status", T),
                ("created_at", TS),
            ),
        ),
        TableSpec(
            "events",
            (
                ("event_id", N),
                ("customer_id", N),
                ("event_type", T),
                ("occurred_at", TS),
                ("revenue", N),
            ),
        ),
        TableSpec("products", (("product_id", N), ("brand", T), ("price", N))),
        TableSpec("favorites", (("customer_id", N), ("product_id", N))),
        TableSpec("tickets", (("ticket_id", N), ("account_id", N), ("priority", T))),
    )
}

PKS = {
    "customers": "id",
    "orders": "order_id",
    "events": "event_id",
    "products": "product_id",
    "favorites": "customer_id",
    "tickets": "ticket_id",
}
ENTITY = {
    "customers": EntityType.PARENT,
    "events": EntityType.EVENT,
}


def _model(name: str, *, prefix: str = "") -> ModelDef:
    spec = TABLES[name]
    return ModelDef(
        id=name,
        name=name,
        entity_type=ENTITY.get(name, EntityType.RELATED),
        primary_key=PKS[name],
        # The DuckDB spelling, as the catalog stores it: it gives number columns their range.
        columns={
            c: Column(c, spec.column_type(c), warehouse_type=SQL_TYPES[kind][0])
            for c, kind in spec.columns
        },
        table=f"{prefix}{name}",
        timestamp_column={"events": "occurred_at", "orders": "created_at"}.get(name),
    )


def _rel(rid: str, src: str, dst: str, a: str, b: str, card: Cardinality, **kw: str):
    return RelationshipDef(rid, rid, src, dst, a, b, card, **kw)


RELATIONSHIPS = {
    r.id: r
    for r in (
        _rel("orders", "customers", "orders", "id", "customer_id", Cardinality.ONE_TO_MANY),
        _rel("events", "customers", "events", "id", "customer_id", Cardinality.ONE_TO_MANY),
        _rel("product", "orders", "products", "product_id", "product_id", Cardinality.MANY_TO_ONE),
        _rel(
            "favorites",
            "customers",
            "products",
            "id",
            "product_id",
            Cardinality.MANY_TO_MANY,
            through_model_id="favorites",
            through_from_column="customer_id",
            through_to_column="product_id",
        ),
        _rel(
            "tickets", "customers", "tickets", "account_id", "account_id", Cardinality.ONE_TO_MANY
        ),
    )
}


def _trait(slug: str, kind: TraitType, result: ResultType, **config: Any) -> TraitDef:
    return TraitDef(slug, slug, slug, "customers", kind, result, config)


AGG, OCC, SQL, FORM = TraitType.AGGREGATION, TraitType.OCCURRENCE, TraitType.SQL, TraitType.FORMULA
NUM, STR, BOOL = ResultType.NUMBER, ResultType.STRING, ResultType.BOOLEAN
TSR = ResultType.TIMESTAMP
TRAITS = {
    t.id: t
    for t in (
        _trait("order_count", AGG, NUM, relationship_id="orders", function="count"),
        _trait("total_spend", AGG, NUM, relationship_id="orders", function="sum", column="amount"),
        _trait("avg_amount", AGG, NUM, relationship_id="orders", function="avg", column="amount"),
        _trait("max_amount", AGG, NUM, relationship_id="orders", function="max", column="amount"),
        _trait(
            "first_order_at",
            AGG,
            TSR,
            relationship_id="orders",
            function="min",
            column="created_at",
        ),
        _trait(
            "n_categories",
            AGG,
            NUM,
            relationship_id="orders",
            function="count_distinct",
            column="category",
        ),
        _trait(
            "books_count",
            AGG,
            NUM,
            relationship_id="orders",
            function="count",
            filter={
                "type": "condition",
                "condition_type": "property",
                "column": "category",
                "operator": "equals",
                "value": "books",
            },
        ),
        _trait("fav_count", AGG, NUM, relationship_id="favorites", function="count"),
        _trait(
            "last_category", OCC, STR, relationship_id="orders", position="last", column="category"
        ),
        _trait(
            "first_event", OCC, STR, relationship_id="events", position="first", column="event_type"
        ),
        _trait(
            "age_next", SQL, NUM, sql="SELECT id AS entity_key, age + 1 AS value FROM customers"
        ),
        _trait("avg_order", FORM, NUM, expression="total_spend / order_count"),
        _trait("big_spender", FORM, BOOL, expression="(total_spend - 2 * order_count) > 50"),
    )
}


def _cond(**kw: Any) -> dict[str, Any]:
    return {"type": "condition", **kw}


AUDIENCES = {
    a.id: a
    for a in (
        AudienceDef(
            "adults",
            "Adults",
            "customers",
            _cond(
                condition_type="property", column="age", operator="greater_than_or_equal", value=30
            ),
        ),
        AudienceDef(
            "adult_buyers",
            "Adult buyers",
            "customers",
            {
                "type": "and",
                "children": [
                    _cond(condition_type="audience", audience_id="adults", operator="is_member"),
                    _cond(condition_type="relation", relationship_id="orders"),
                ],
            },
        ),
        AudienceDef(
            "not_vip",
            "Not VIP",
            "customers",
            {
                "type": "not",
                "children": [_cond(condition_type="property", column="vip", operator="is_true")],
            },
        ),
    )
}


def make_schema(
    *,
    prefix: str = "",
    extra_audiences: Mapping[str, AudienceDef] | None = None,
    extra_traits: Mapping[str, TraitDef] | None = None,
    extra_models: Mapping[str, ModelDef] | None = None,
) -> CatalogSchema:
    """The test catalog; `prefix` qualifies table names (``main.``)."""
    return CatalogSchema(
        models={**{n: _model(n, prefix=prefix) for n in TABLES}, **(extra_models or {})},
        relationships=RELATIONSHIPS,
        traits={**TRAITS, **(extra_traits or {})},
        audiences={**AUDIENCES, **(extra_audiences or {})},
    )


Dataset = Mapping[str, Sequence[Mapping[str, Any]]]


def load_duckdb(con: Any, data: Dataset) -> None:
    """(Re)create every table in DuckDB and insert the rows."""
    for name, spec in TABLES.items():
        cols = ", ".join(f'"{c}" {SQL_TYPES[k][0]}' for c, k in spec.columns)
        con.execute(f"CREATE OR REPLACE TABLE {name} ({cols})")
        rows = [tuple(r.get(c) for c, _ in spec.columns) for r in data.get(name, ())]
        if rows:
            marks = ", ".join("?" for _ in spec.columns)
            con.executemany(f"INSERT INTO {name} VALUES ({marks})", rows)


def load_postgres(conn: Any, data: Dataset) -> None:
    """(Re)create every table in PostgreSQL (psycopg connection) and COPY the rows in."""
    with conn.cursor() as cur:
        for name, spec in TABLES.items():
            cols = ", ".join(f'"{c}" {SQL_TYPES[k][1]}' for c, k in spec.columns)
            cur.execute(f"DROP TABLE IF EXISTS {name}")
            cur.execute(f"CREATE TABLE {name} ({cols})")
            names = ", ".join(f'"{c}"' for c, _ in spec.columns)
            with cur.copy(f"COPY {name} ({names}) FROM STDIN") as copy:
                for r in data.get(name, ()):
                    copy.write_row(tuple(r.get(c) for c, _ in spec.columns))
    conn.commit()
