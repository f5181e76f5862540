"""estimate-filter latency through the API, beside the same count run directly on DuckDB.

    python benchmarks/estimate_latency.py [--large 10000000] [--repeat 30]

Two parent models: the demo data (100k customers with orders and events, built by the
demo generator + dbt) and a 10M-row customers table with as many orders and events (a
relation and an event tree are timed on those: goal ≤ 600 ms exact). For each tree, p50/p95 of
`POST /models/{id}/estimate-filter` (in-process ASGI, auth + catalog + compile + query)
in exact and auto/sampled mode, and the hand-written `SELECT count(*)` on a DuckDB
connection as the floor. Sampled rows report their error against the exact count. Then
`auto` requests each sent after `--idle` seconds without any (the API has closed its
DuckDB instance by then: COMPOSABLE_WAREHOUSE_HOLD_SECONDS, default 3).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import duckdb
from fastapi.testclient import TestClient

from composable_dagster.api.app import create_app
from composable_dagster.catalog import workspaces
from composable_dagster.catalog.db import catalog_session
from composable_dagster.demo.dbt_build import build_demo_warehouse
from composable_dagster.settings import Settings

# The hand-written counts each case is compared with (the floor).
FLOOR_QUERIES = (
    "SELECT count(*) FROM analytics.customers WHERE lifetime_value > 1000 "
    "AND plan IN ('pro', 'enterprise')",
    "SELECT count(*) FROM analytics.customers WHERE lifetime_value > 1000 AND customer_id "
    "IN (SELECT customer_id FROM analytics.events WHERE occurred_at >= now()::TIMESTAMP "
    "- INTERVAL 30 DAY AND occurred_at <= now()::TIMESTAMP)",
    "SELECT count(*) FROM analytics.big_customers WHERE lifetime_value > 4500",
    "SELECT count(*) FROM analytics.big_customers WHERE country = 'US' AND plan = 'pro'",
    "SELECT count(*) FROM analytics.big_customers WHERE lifetime_value > 2500 AND customer_id "
    "IN (SELECT customer_id FROM analytics.big_orders WHERE category = 'electronics' "
    "AND amount > 100)",
    "SELECT count(*) FROM analytics.big_customers WHERE customer_id IN (SELECT customer_id "
    "FROM analytics.big_events WHERE event_type = 'purchase' AND occurred_at >= "
    "now()::TIMESTAMP - INTERVAL 30 DAY AND occurred_at <= now()::TIMESTAMP)",
)


def timed(fn: Callable[[], object], repeat: int) -> tuple[float, float, object]:
    fn()  # warm
    samples, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn()
        samples.append(time.perf_counter() - started)
    samples.sort()
    return statistics.median(samples), samples[int(0.95 * (len(samples) - 1))], result


def prop(column: str, operator: str, value: object) -> dict:
    return {"type": "condition", "condition_type": "property", "column": column,
            "operator": operator, "value": value}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--large", type=int, default=10_000_000)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--idle", type=float, default=10.0, help="seconds before each request")
    parser.add_argument("--idle-repeat", type=int, default=5)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="composable-estimate-"))
    warehouse = work / "warehouse.duckdb"
    build_demo_warehouse(f"duckdb:///{warehouse}", customers=100_000, state_dir=work / "dbt")
    with duckdb.connect(str(warehouse)) as con:
        con.execute(f"""
            CREATE TABLE analytics.big_customers AS
            SELECT printf('C%09d', i) AS customer_id,
                   (hash(i) % 5000)::DOUBLE AS lifetime_value,
                   ['US', 'DE', 'GB', 'FR', 'IN'][(hash(i * 3) % 5 + 1)::BIGINT] AS country,
                   ['free', 'basic', 'pro', 'enterprise'][(hash(i * 7) % 4 + 1)::BIGINT] AS plan
            FROM range({args.large}) t(i) ORDER BY hash(i + 1)""")
        # As many orders and events as big customers, on random customers over 180 days;
        # events half a day off whole days back, so no event crosses a "within 30 days"
        # bound while the benchmark runs (the API's now and the floor's differ by minutes).
        con.execute(f"""
            CREATE TABLE analytics.big_orders AS
            SELECT printf('O%09d', i) AS order_id,
                   printf('C%09d', hash(i * 11) % {args.large}) AS customer_id,
                   ['books', 'electronics', 'garden', 'toys'][(hash(i * 13) % 4 + 1)::BIGINT]
                       AS category,
                   (hash(i * 17) % 500)::DOUBLE AS amount
            FROM range({args.large}) t(i)""")
        con.execute(f"""
            CREATE TABLE analytics.big_events AS
            SELECT printf('E%09d', i) AS event_id,
                   printf('C%09d', hash(i * 19) % {args.large}) AS customer_id,
                   ['page_view', 'add_to_cart', 'purchase'][(hash(i * 23) % 3 + 1)::BIGINT]
                       AS event_type,
                   now()::TIMESTAMP - to_days((hash(i * 29) % 180)::INTEGER) - INTERVAL 12 HOUR
                       AS occurred_at
            FROM range({args.large}) t(i)""")

    # Floors first: the API keeps its own DuckDB instance of this file open, and DuckDB
    # refuses a second instance of one file with another configuration in a process.
    floors: dict[str, tuple[float, int]] = {}
    with duckdb.connect(str(warehouse), read_only=True) as con:
        for sql in FLOOR_QUERIES:
            floor, _, direct = timed(lambda: con.execute(sql).fetchone()[0], args.repeat)  # noqa: B023
            floors[sql] = (floor, int(direct))

    settings = Settings(home=work / "home", catalog_url=f"sqlite:///{work / 'catalog.sqlite'}",
                        warehouse_url=f"duckdb:///{warehouse}")  # fmt: skip
    client = TestClient(create_app(settings))
    with catalog_session(settings.resolved_catalog_url) as session:
        ws = workspaces.create_workspace(session, name="bench")
        key = workspaces.issue_api_key(
            session, workspace_id=ws.id, spec=workspaces.ApiKeyCreate(name="b"), created_by=None
        ).raw_key
        ws_id = ws.id
    headers = {"Authorization": f"Bearer {key}", "X-Workspace-ID": ws_id}
    base = f"/api/v1/workspaces/{ws_id}"

    def model(name: str, table: str, **extra: str) -> str:
        body = {"name": name, "source_schema": "analytics", "source_table": table, **extra}
        return client.post(f"{base}/models", json=body, headers=headers).json()["id"]

    demo = model("customers", "customers", primary_key_column="customer_id")
    events = model("events", "events", primary_key_column="event_id", entity_type="event",
                   timestamp_column="occurred_at")  # fmt: skip
    orders = model("orders", "orders", primary_key_column="order_id", entity_type="related")
    big = model("big", "big_customers", primary_key_column="customer_id")
    big_orders = model("big_orders", "big_orders", primary_key_column="order_id",
                       entity_type="related")  # fmt: skip
    big_events = model("big_events", "big_events", primary_key_column="event_id",
                       entity_type="event", timestamp_column="occurred_at")  # fmt: skip
    rels = {}
    for name, parent, to in (
        ("ev", demo, events),
        ("ord", demo, orders),
        ("big_ord", big, big_orders),
        ("big_ev", big, big_events),
    ):
        rels[name] = client.post(f"{base}/relationships", headers=headers, json={
            "name": name, "from_model_id": parent, "to_model_id": to,
            "from_column": "customer_id", "to_column": "customer_id"}).json()["id"]  # fmt: skip

    large = f"{args.large / 1e6:g}M" if args.large >= 1_000_000 else f"{args.large:,}"
    cases = [
        ("100k", "LTV > 1000 and plan in (pro, enterprise)", demo,
         {"type": "and", "children": [prop("lifetime_value", "greater_than", 1000),
                                      prop("plan", "in", ["pro", "enterprise"])]},
         FLOOR_QUERIES[0]),
        ("100k", "seed example: LTV > 1000 and an event in 30 days", demo,
         {"type": "and", "children": [prop("lifetime_value", "greater_than", 1000),
          {"type": "condition", "condition_type": "event", "relationship_id": rels["ev"],
           "count_operator": "at_least", "count_value": 1,
           "time_window": {"type": "within", "value": 30, "unit": "days"}}]},
         FLOOR_QUERIES[1]),
        (large, "LTV > 4500 (10%)", big, {"type": "and", "children": [
            prop("lifetime_value", "greater_than", 4500)]},
         FLOOR_QUERIES[2]),
        (large, "country = US and plan = pro (5%)", big, {"type": "and", "children": [
            prop("country", "equals", "US"), prop("plan", "equals", "pro")]},
         FLOOR_QUERIES[3]),
        (large, "LTV > 2500 and an electronics order over 100 (relation)", big,
         {"type": "and", "children": [prop("lifetime_value", "greater_than", 2500),
          {"type": "condition", "condition_type": "relation", "relationship_id": rels["big_ord"],
           "filters": {"type": "and", "children": [prop("category", "equals", "electronics"),
                                                   prop("amount", "greater_than", 100)]}}]},
         FLOOR_QUERIES[4]),
        (large, "a purchase event in 30 days (event)", big,
         {"type": "and", "children": [
          {"type": "condition", "condition_type": "event", "relationship_id": rels["big_ev"],
           "count_operator": "at_least", "count_value": 1,
           "filters": prop("event_type", "equals", "purchase"),
           "time_window": {"type": "within", "value": 30, "unit": "days"}}]},
         FLOOR_QUERIES[5]),
    ]  # fmt: skip
    print("| rows | tree | mode | p50 ms | p95 ms | count | error vs exact | floor p50 ms |")
    print("|---|---|---|---|---|---|---|---|")
    for rows, label, model_id, tree, sql in cases:
        floor, exact_direct = floors[sql]
        exact = None
        for mode in ("exact", "auto", "sampled"):
            url = f"{base}/models/{model_id}/estimate-filter?mode={mode}"
            p50, p95, body = timed(
                lambda: client.post(url, json={"filter_tree": tree}, headers=headers).json(),  # noqa: B023
                args.repeat,
            )
            count = body["estimated_size"]
            if mode == "exact":
                exact = count
                assert count == exact_direct, (label, count, exact_direct)
            error = "" if mode == "exact" else f"{abs(count - exact) / max(exact, 1):.2%}"
            shown = f"{mode} ({'sampled' if body['sampled'] else 'exact'})"
            print(f"| {rows} | {label} | {shown} | {p50 * 1000:.0f} | {p95 * 1000:.0f} | "
                  f"{count:,} | {error} | {floor * 1000:.0f} |")  # fmt: skip

    print(f"\n`auto`, each request after {args.idle:g} s idle ({args.idle_repeat} requests)\n")
    print("| rows | tree | answer | p50 ms | max ms |")
    print("|---|---|---|---|---|")
    for rows, label, model_id, tree, _ in cases:
        url = f"{base}/models/{model_id}/estimate-filter?mode=auto"
        samples = []
        for _ in range(args.idle_repeat):
            time.sleep(args.idle)
            started = time.perf_counter()
            body = client.post(url, json={"filter_tree": tree}, headers=headers).json()
            samples.append(time.perf_counter() - started)
        answer = "sampled" if body["sampled"] else "exact"
        print(f"| {rows} | {label} | {answer} | {statistics.median(samples) * 1000:.0f} | "
              f"{max(samples) * 1000:.0f} |")  # fmt: skip


if __name__ == "__main__":
    main()
