"""Building the demo warehouse with dbt on DuckDB and PostgreSQL."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import duckdb
import psycopg
import pytest

from composable_dagster.dbt_project import (
    DBT_PROJECT_DIR,
    DbtCommandError,
    dbt_env_for_warehouse,
    dbt_parse,
    pg_connect_kwargs,
)
from composable_dagster.demo.dbt_build import build_demo_warehouse
from composable_dagster.demo.generate import generate_raw_duckdb

AS_OF = datetime.date(2026, 5, 1)
CUSTOMERS = 2_000
MODELS = ("customers", "orders", "events")
SEED_EXAMPLE_COLUMNS = {
    "customers": {"customer_id", "email", "email_domain", "phone", "lifetime_value", "country"},
    "orders": {"order_id", "customer_id", "category", "amount", "ordered_at"},
    "events": {"event_id", "customer_id", "event_type", "occurred_at"},
}
# "LTV > 1000 and at least one event within 30 days", the seed document's full example.
SEED_EXAMPLE_SQL = (
    "SELECT count(*) FROM analytics.customers WHERE lifetime_value > 1000 AND customer_id IN "
    "(SELECT customer_id FROM analytics.events WHERE occurred_at >= TIMESTAMP '2026-04-01')"
)


def test_project_dir_is_the_repository_dbt_project() -> None:
    assert (DBT_PROJECT_DIR / "dbt_project.yml").is_file()
    assert (DBT_PROJECT_DIR / "profiles.yml").is_file()
    assert "name: composable_demo" in (DBT_PROJECT_DIR / "dbt_project.yml").read_text()


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "duckdb:////data/wh.duckdb",
            {"COMPOSABLE_DBT_TARGET": "duckdb", "COMPOSABLE_WAREHOUSE_PATH": "/data/wh.duckdb"},
        ),
        (
            "postgresql+psycopg://alice:s%40cret@db.example:6543/shop",
            {
                "COMPOSABLE_DBT_TARGET": "postgres",
                "COMPOSABLE_WAREHOUSE_PG_HOST": "db.example",
                "COMPOSABLE_WAREHOUSE_PG_PORT": "6543",
                "COMPOSABLE_WAREHOUSE_PG_USER": "alice",
                "COMPOSABLE_WAREHOUSE_PG_PASSWORD": "s@cret",
                "COMPOSABLE_WAREHOUSE_PG_DBNAME": "shop",
            },
        ),
        (
            "postgresql://bob@localhost/analytics?sslmode=require",
            {
                "COMPOSABLE_DBT_TARGET": "postgres",
                "COMPOSABLE_WAREHOUSE_PG_HOST": "localhost",
                "COMPOSABLE_WAREHOUSE_PG_PORT": "5432",
                "COMPOSABLE_WAREHOUSE_PG_USER": "bob",
                "COMPOSABLE_WAREHOUSE_PG_PASSWORD": "",
                "COMPOSABLE_WAREHOUSE_PG_DBNAME": "analytics",
                "COMPOSABLE_WAREHOUSE_PG_SSLMODE": "require",
            },
        ),
    ],
)
def test_dbt_env_for_warehouse(url: str, expected: dict[str, str]) -> None:
    assert dbt_env_for_warehouse(url) == expected


def test_dbt_env_resolves_relative_duckdb_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    env = dbt_env_for_warehouse("duckdb:///state/wh.duckdb")
    assert env["COMPOSABLE_WAREHOUSE_PATH"] == str(tmp_path.resolve() / "state" / "wh.duckdb")


@pytest.mark.parametrize(
    "url", ["duckdb:///:memory:", "duckdb://", "sqlite:///x.db", "mysql://u@h/db"]
)
def test_dbt_env_rejects_unsupported_warehouses(url: str) -> None:
    with pytest.raises(ValueError):
        dbt_env_for_warehouse(url)


def test_dbt_parse_writes_a_manifest_without_a_warehouse(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("COMPOSABLE_WAREHOUSE_PATH", raising=False)
    manifest_path = dbt_parse(tmp_path / "target")
    assert manifest_path == (tmp_path / "target" / "manifest.json").resolve()
    nodes = json.loads(manifest_path.read_text())["nodes"]
    assert {f"model.composable_demo.{m}" for m in MODELS} <= set(nodes)
    assert sum(1 for key in nodes if key.startswith("test.composable_demo.")) >= 10
    assert not (tmp_path / "target" / "warehouse.duckdb").exists()


def test_dbt_parse_for_postgres_does_not_connect(tmp_path: Path) -> None:
    # Port 1 refuses connections: parsing must succeed without reaching the warehouse.
    manifest_path = dbt_parse(
        tmp_path / "target", warehouse_url="postgresql+psycopg://u:pw@127.0.0.1:1/nowhere"
    )
    manifest = json.loads(manifest_path.read_text())
    assert manifest["nodes"]["model.composable_demo.customers"]["database"] == "nowhere"


def _duckdb_columns(con: duckdb.DuckDBPyConnection, table: str) -> set[str]:
    rows = con.sql(
        "SELECT column_name FROM information_schema.columns "
        f"WHERE table_schema = 'analytics' AND table_name = '{table}'"
    ).fetchall()
    return {name for (name,) in rows}


def test_build_on_duckdb(tmp_path: Path) -> None:
    path = tmp_path / "wh" / "demo.duckdb"
    result = build_demo_warehouse(
        f"duckdb:///{path}", customers=CUSTOMERS, as_of=AS_OF, state_dir=tmp_path / "dbt"
    )

    assert result.target == "duckdb"
    assert result.models == 3
    assert result.tests >= 15
    assert result.raw.customers == CUSTOMERS
    assert result.target_dir == (tmp_path / "dbt" / "target").resolve()
    assert (result.target_dir / "manifest.json").is_file()
    with duckdb.connect(str(path), read_only=True) as con:
        for model, columns in SEED_EXAMPLE_COLUMNS.items():
            assert columns <= _duckdb_columns(con, model), model
        counts = [con.sql(f"SELECT count(*) FROM analytics.{m}").fetchall()[0][0] for m in MODELS]
        assert counts == [result.raw.customers, result.raw.orders, result.raw.events]
        dirty = con.sql(
            "SELECT count(*) FROM analytics.customers WHERE email <> lower(trim(email))"
            " OR email_domain IS DISTINCT FROM nullif(split_part(email, '@', 2), '')"
        ).fetchall()
        assert dirty == [(0,)]
        assert (
            con.sql(
                "SELECT count(*) FROM raw.customers WHERE email <> lower(trim(email))"
            ).fetchall()[0][0]
            > 0
        )
        assert con.sql(SEED_EXAMPLE_SQL).fetchall()[0][0] > 0
        electronics = con.sql(
            "SELECT count(*) FROM analytics.orders WHERE category = 'electronics'"
        ).fetchall()[0][0]
        assert electronics > 0
        out_of_order = con.sql(
            "SELECT count(*) FROM (SELECT occurred_at < lag(occurred_at) OVER (ORDER BY rowid)"
            " AS bad FROM analytics.events) WHERE bad"
        ).fetchall()
        assert out_of_order == [(0,)]


def test_build_twice_in_one_process_replaces_the_data(tmp_path: Path) -> None:
    url = f"duckdb:///{tmp_path / 'demo.duckdb'}"
    first = build_demo_warehouse(url, customers=500, seed=1, as_of=AS_OF, state_dir=tmp_path)
    second = build_demo_warehouse(url, customers=700, seed=2, as_of=AS_OF, state_dir=tmp_path)
    assert (first.raw.customers, second.raw.customers) == (500, 700)
    assert second.models == 3
    with duckdb.connect(str(tmp_path / "demo.duckdb"), read_only=True) as con:
        assert con.sql("SELECT count(*) FROM analytics.customers").fetchall() == [(700,)]


def test_build_failure_raises_with_dbts_message(tmp_path: Path) -> None:
    path = tmp_path / "locked.duckdb"
    # Holding the file open in this process locks it against the dbt subprocess.
    with duckdb.connect(str(path)) as holder:
        holder.execute("SELECT 1")
        with pytest.raises(DbtCommandError) as raised:
            build_demo_warehouse(
                f"duckdb:///{path}", customers=100, as_of=AS_OF, state_dir=tmp_path
            )
    message = str(raised.value)
    assert "dbt build failed" in message
    assert "lock" in message.lower()


def _pg_one(pg: psycopg.Connection, query: str) -> tuple:
    row = pg.execute(query).fetchone()
    assert row is not None
    return row


def test_build_on_postgres(pg_url: str, tmp_path: Path) -> None:
    result = build_demo_warehouse(
        pg_url, customers=CUSTOMERS, as_of=AS_OF, state_dir=tmp_path / "dbt"
    )
    assert result.target == "postgres"
    assert result.models == 3
    assert result.tests >= 15

    reference = duckdb.connect()
    expected = generate_raw_duckdb(reference, customers=CUSTOMERS, seed=42, as_of=AS_OF)
    assert result.raw == expected

    with psycopg.connect(**pg_connect_kwargs(pg_url)) as pg:
        for model, columns in SEED_EXAMPLE_COLUMNS.items():
            rows = pg.execute(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_schema = 'analytics' AND table_name = %s",
                (model,),
            ).fetchall()
            assert columns <= {name for (name,) in rows}, model
        for model, count in zip(
            MODELS, (expected.customers, expected.orders, expected.events), strict=True
        ):
            assert _pg_one(pg, f"SELECT count(*) FROM raw.{model}") == (count,)
            assert _pg_one(pg, f"SELECT count(*) FROM analytics.{model}") == (count,)
        assert _pg_one(pg, SEED_EXAMPLE_SQL)[0] > 0
        assert _pg_one(
            pg, "SELECT count(*) FROM analytics.customers WHERE email <> lower(trim(email))"
        ) == (0,)
        # COPY must round-trip values exactly, NULLs and empty strings included.
        query = (
            "SELECT count(email), count(phone), count(lifetime_value), count(age),"
            " min(signup_at), max(signup_at), sum(is_subscribed::int), sum(lifetime_value)"
            " FROM raw.customers"
        )
        *exact, total = _pg_one(pg, query)
        *expected_exact, expected_total = reference.sql(query).fetchall()[0]
        assert exact == expected_exact
        assert total == pytest.approx(expected_total)
        sample = "SELECT * FROM raw.events ORDER BY event_id LIMIT 20"
        assert pg.execute(sample).fetchall() == reference.sql(sample).fetchall()
        primary_key = _pg_one(
            pg,
            "SELECT count(*) FROM information_schema.table_constraints WHERE table_schema = 'raw'"
            " AND table_name = 'customers' AND constraint_type = 'PRIMARY KEY'",
        )
        assert primary_key == (1,)
