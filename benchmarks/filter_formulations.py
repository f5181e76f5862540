"""Compare the compiler's SQL with hand-written formulations of the same audience on DuckDB.

Synthetic data is generated inside DuckDB with range() and hash(): by default 10M customers,
30M orders and 100M events (`--scale 0.01` for a quick run). Each query is wrapped in
``SELECT count(*) FROM (...)`` so that result transfer does not dominate, run once to warm
up, then timed `--repeat` times; the median is reported with its ratio to the best
hand-written formulation of the same question. Every formulation must return the same count.

    python benchmarks/filter_formulations.py --scale 0.1
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import datetime

import duckdb

from composable_dagster.filters import (
    Cardinality,
    CatalogSchema,
    Column,
    ColumnType,
    EntityType,
    ModelDef,
    RelationshipDef,
    compile_members,
)

NOW = datetime(2024, 6, 15)
T, N, TS = ColumnType.TEXT, ColumnType.NUMBER, ColumnType.TIMESTAMP


def build_data(con: duckdb.DuckDBPyConnection, scale: float) -> dict[str, int]:
    sizes = {
        "customers": int(10_000_000 * scale),
        "orders": int(30_000_000 * scale),
        "events": int(100_000_000 * scale),
    }
    c, o, e = sizes["customers"], sizes["orders"], sizes["events"]
    con.execute(f"""
        CREATE OR REPLACE TABLE customers AS
        SELECT i AS customer_id,
               'user' || i || (['@gmail.com', '@yahoo.com', '@example.org', '@mail.de'])
                   [1 + (hash(i) % 4)::INT] AS email,
               (hash(i * 3) % 100000) / 100.0 AS ltv,
               (['DE', 'FR', 'US', 'GB', 'IT'])[1 + (hash(i * 5) % 5)::INT] AS country
        FROM range({c}) t(i)
    """)
    # Orders and events are written in time order, as an append-only table would be.
    con.execute(f"""
        CREATE OR REPLACE TABLE orders AS
        SELECT i AS order_id,
               CASE WHEN i % 1000 = 0 THEN NULL ELSE (hash(i) % {c})::BIGINT END AS customer_id,
               (['books', 'games', 'toys', 'garden', 'food', 'music', 'sports', 'tools'])
                   [1 + (hash(i * 7) % 8)::INT] AS category,
               (hash(i * 11) % 50000) / 100.0 AS amount,
               TIMESTAMP '2023-06-15' + (i * (366 * 86400 / {o}))::BIGINT * INTERVAL 1 SECOND
                   AS created_at
        FROM range({o}) t(i)
    """)
    con.execute(f"""
        CREATE OR REPLACE TABLE events AS
        SELECT i AS event_id,
               (hash(i * 13) % {c})::BIGINT AS customer_id,
               (['view', 'click', 'purchase', 'signup'])[1 + (hash(i * 17) % 4)::INT]
                   AS event_type,
               TIMESTAMP '2023-06-15' + (i * (366 * 86400 / {e}))::BIGINT * INTERVAL 1 SECOND
                   AS occurred_at
        FROM range({e}) t(i)
    """)
    return sizes


def catalog() -> CatalogSchema:
    def model(mid: str, pk: str, cols: dict, entity: EntityType, ts: str | None = None):
        columns = {k: Column(k, v) for k, v in cols.items()}
        return ModelDef(mid, mid, entity, pk, columns, table=mid, timestamp_column=ts)

    models = {
        "customers": model("customers", "customer_id",
                           {"customer_id": N, "email": T, "ltv": N, "country": T},
                           EntityType.PARENT),
        "orders": model("orders", "order_id", {"order_id": N, "customer_id": N, "category": T,
                                                "amount": N, "created_at": TS},
                        EntityType.RELATED, "created_at"),
        "events": model("events", "event_id", {"event_id": N, "customer_id": N,
                                                "event_type": T, "occurred_at": TS},
                        EntityType.EVENT, "occurred_at"),
    }  # fmt: skip
    rels = {
        r: RelationshipDef(r, r, "customers", r, "customer_id", "customer_id",
                           Cardinality.ONE_TO_MANY)
        for r in ("orders", "events")
    }  # fmt: skip
    return CatalogSchema(models=models, relationships=rels)


def prop(column: str, operator: str, value: object) -> dict:
    return {"type": "condition", "condition_type": "property", "column": column,
            "operator": operator, "value": value}  # fmt: skip


GMAIL = prop("email", "ends_with", "@gmail.com")
BOOKS2 = {"type": "condition", "condition_type": "relation", "relationship_id": "orders",
          "count_operator": "at_least", "count_value": 2,
          "filters": prop("category", "equals", "books")}  # fmt: skip
PURCHASE3 = {"type": "condition", "condition_type": "event", "relationship_id": "events",
             "count_operator": "at_least", "count_value": 3,
             "filters": prop("event_type", "equals", "purchase"),
             "time_window": {"type": "within", "value": 30, "unit": "days"}}  # fmt: skip
AT_MOST_1 = {"type": "condition", "condition_type": "relation", "relationship_id": "orders",
             "count_operator": "at_most", "count_value": 1,
             "filters": prop("category", "equals", "books")}  # fmt: skip
TREE = {"type": "or", "children": [
    {"type": "and", "children": [prop("ltv", "greater_than", 500), BOOKS2]},
    {"type": "and", "children": [PURCHASE3, {"type": "not", "children": [GMAIL]}]},
]}  # fmt: skip

WIN = "occurred_at >= TIMESTAMP '2024-05-16 00:00:00' AND occurred_at <= TIMESTAMP '2024-06-15'"
H_BOOKS2 = ("SELECT customer_id FROM orders WHERE category = 'books' AND customer_id IS NOT NULL "
            "GROUP BY customer_id HAVING count(*) >= 2")  # fmt: skip
H_PURCHASE3 = (f"SELECT customer_id FROM events WHERE event_type = 'purchase' AND {WIN} "
               "GROUP BY customer_id HAVING count(*) >= 3")  # fmt: skip
KEYS = "SELECT customer_id FROM customers"
HAND = {
    "email ends with @gmail.com": {
        "LIKE '%@gmail.com'": "SELECT customer_id FROM customers WHERE email LIKE '%@gmail.com'",
        "suffix()": "SELECT customer_id FROM customers WHERE suffix(email, '@gmail.com')",
    },
    ">= 2 orders in books": {
        "IN (GROUP BY HAVING)": f"{KEYS} WHERE customer_id IN ({H_BOOKS2})",
        "correlated COUNT": f"{KEYS} c WHERE (SELECT count(*) FROM orders o "
        "WHERE o.customer_id = c.customer_id AND o.category = 'books') >= 2",
    },
    ">= 3 purchases in 30 days": {
        "IN (GROUP BY HAVING)": f"{KEYS} WHERE customer_id IN ({H_PURCHASE3})",
        "correlated COUNT": f"{KEYS} c WHERE (SELECT count(*) FROM events e "
        f"WHERE e.customer_id = c.customer_id AND e.event_type = 'purchase' AND {WIN}) >= 3",
    },
    "<= 1 books orders (incl. none)": {
        "NOT IN (GROUP BY HAVING)": "SELECT customer_id FROM customers WHERE customer_id NOT IN "
        "(SELECT customer_id FROM orders WHERE category = 'books' AND customer_id IS NOT NULL "
        "GROUP BY customer_id HAVING count(*) > 1)",
        "LEFT JOIN count": "SELECT c.customer_id FROM customers c LEFT JOIN (SELECT customer_id, "
        "count(*) n FROM orders WHERE category = 'books' GROUP BY 1) o USING (customer_id) "
        "WHERE coalesce(o.n, 0) <= 1",
    },
    "and/or/not tree": {
        "INTERSECT/UNION/EXCEPT": "(SELECT customer_id FROM customers WHERE ltv > 500 INTERSECT "
        f"{H_BOOKS2}) UNION (({H_PURCHASE3}) EXCEPT SELECT customer_id FROM customers "
        "WHERE email LIKE '%@gmail.com')",
        "IN / NOT IN": "SELECT customer_id FROM customers WHERE (ltv > 500 AND customer_id IN "
        f"({H_BOOKS2})) OR (customer_id IN ({H_PURCHASE3}) AND NOT email LIKE '%@gmail.com')",
        "correlated": "SELECT customer_id FROM customers c WHERE (ltv > 500 AND (SELECT count(*) "
        "FROM orders o WHERE o.customer_id = c.customer_id AND o.category = 'books') >= 2) OR "
        "((SELECT count(*) FROM events e WHERE e.customer_id = c.customer_id AND "
        f"e.event_type = 'purchase' AND {WIN}) >= 3 AND NOT email LIKE '%@gmail.com')",
    },
}  # fmt: skip
COMPILED = {
    "email ends with @gmail.com": GMAIL,
    ">= 2 orders in books": BOOKS2,
    ">= 3 purchases in 30 days": PURCHASE3,
    "<= 1 books orders (incl. none)": AT_MOST_1,
    "and/or/not tree": TREE,
}
SLOW = {"correlated COUNT", "correlated"}  # skipped above --max-correlated-scale


def timed(con: duckdb.DuckDBPyConnection, sql: str, repeat: int) -> tuple[float, int]:
    wrapped = f"SELECT count(*) FROM ({sql}) q"
    count = con.execute(wrapped).fetchone()[0]  # warm-up
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        con.execute(wrapped).fetchone()
        times.append(time.perf_counter() - start)
    return statistics.median(times), count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--max-correlated-scale",
        type=float,
        default=0.1,
        help="skip correlated formulations above this scale (they are slow)",
    )
    parser.add_argument("--database", default=":memory:")
    args = parser.parse_args()

    con = duckdb.connect(args.database)
    start = time.perf_counter()
    sizes = build_data(con, args.scale)
    print(f"data {sizes} built in {time.perf_counter() - start:.1f} s")
    schema = catalog()
    rows = []
    for question, tree in COMPILED.items():
        compiled = compile_members(tree, parent_model_id="customers", schema=schema,
                                   now=NOW).sql  # fmt: skip
        results = {}
        for name, sql in HAND[question].items():
            if name in SLOW and args.scale > args.max_correlated_scale:
                continue
            results[f"hand: {name}"] = timed(con, sql, args.repeat)
        results["compiled"] = timed(con, compiled, args.repeat)
        counts = {count for _, count in results.values()}
        assert len(counts) == 1, f"{question}: formulations disagree {results}"
        best_hand = min(t for k, (t, _) in results.items() if k.startswith("hand"))
        for name, (seconds, count) in results.items():
            rows.append((question, name, seconds, seconds / best_hand, count))
    print("\n| question | formulation | time (s) | ratio to best hand-written | members |")
    print("|---|---|---|---|---|")
    for question, name, seconds, ratio, count in rows:
        print(f"| {question} | {name} | {seconds:.3f} | {ratio:.2f} | {count} |")


if __name__ == "__main__":
    main()
