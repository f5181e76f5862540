"""The activation store on DuckDB (own file, serialized writers) and on PostgreSQL (a schema
in the warehouse)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pytest
import sqlalchemy as sa

from composable_dagster.filters import compile_members
from composable_dagster.filters.schema import (
    CatalogSchema,
    Column,
    ColumnType,
    EntityType,
    ModelDef,
)
from composable_dagster.warehouse.activation import (
    ActivationStore,
    MembershipChange,
    MembershipStats,
)

SCHEMA = CatalogSchema(
    models={
        "m": ModelDef(
            id="m", name="customers", entity_type=EntityType.PARENT, primary_key="customer_id",
            columns={"customer_id": Column("customer_id", ColumnType.TEXT),
                     "score": Column("score", ColumnType.NUMBER)},
            table="analytics.customers",
        )
    }
)  # fmt: skip


def _members(dialect: str, threshold: int):
    tree = {"type": "and", "children": [
        {"type": "condition", "condition_type": "property", "column": "score",
         "operator": "greater_than", "value": threshold}]}  # fmt: skip
    return compile_members(
        tree, parent_model_id="m", schema=SCHEMA, now=datetime.now(UTC), dialect=dialect
    ).expression


def _exercise(store: ActivationStore) -> None:
    """Scores are 0..99: > 49 is 50 members, > 79 is 20 members, > 69 is 30."""
    assert store.replace_members(audience_id="a-1", members=_members(store.dialect, 49)) == (
        MembershipChange(member_count=50, previous_count=None, added=None, removed=None)
    )
    assert store.replace_members(audience_id="a-1", members=_members(store.dialect, 79)) == (
        MembershipChange(member_count=20, previous_count=50, added=0, removed=30)
    )
    assert store.replace_members(audience_id="a-1", members=_members(store.dialect, 69)) == (
        MembershipChange(member_count=30, previous_count=20, added=10, removed=0)
    )
    assert store.member_keys("a-1") == {f"C{i}" for i in range(70, 100)}
    # Each materialization is a version; the log holds the keys each one changed.
    log = store.membership_log_table("a-1").sql(dialect=store.dialect)
    members = store.members_table("a-1").sql(dialect=store.dialect)
    with store.transaction() as conn:
        assert store.membership_stats(conn, "a-1") == MembershipStats(3, 1, 0)
        logged = conn.exec_driver_sql(
            f"SELECT l.version, l.change, count(*), count(m.key_hash) FROM {log} l "
            f"LEFT JOIN {members} m ON m.key_hash = l.key_hash GROUP BY 1, 2 ORDER BY 1, 2"
        ).all()
    # v2 removed 50..79 (70..79 of them are members again), v3 added 70..79 back.
    assert [tuple(r) for r in logged] == [(2, "remove", 30, 10), (3, "add", 10, 10)]
    assert store.plan_counts(sync_id="s-1", audience_id="a-1") == (30, 0)
    with pytest.raises(LookupError):
        store.plan_counts(sync_id="s-1", audience_id="never-materialized")


def test_duckdb_store_attaches_the_warehouse_read_only(tmp_path: Path) -> None:
    warehouse = tmp_path / "warehouse.duckdb"
    with duckdb.connect(str(warehouse)) as con:
        con.execute("CREATE SCHEMA analytics")
        con.execute("CREATE TABLE analytics.customers AS SELECT 'C' || i AS customer_id, "
                    "i AS score FROM range(100) t(i)")  # fmt: skip
    store = ActivationStore(warehouse_url=f"duckdb:///{warehouse}", home=tmp_path / "home")
    _exercise(store)
    assert (tmp_path / "home" / "activation.duckdb").is_file()
    with store.transaction() as conn, pytest.raises(sa.exc.DBAPIError, match="read-only"):
        conn.exec_driver_sql("DELETE FROM analytics.customers")


def test_postgres_store_is_a_schema_in_the_warehouse(pg_url: str, tmp_path: Path) -> None:
    engine = sa.create_engine(pg_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE SCHEMA analytics")
        conn.exec_driver_sql("CREATE TABLE analytics.customers AS SELECT 'C' || i AS "
                             "customer_id, i AS score FROM generate_series(0, 99) i")  # fmt: skip
    store = ActivationStore(warehouse_url=pg_url, home=tmp_path)
    _exercise(store)
    with engine.connect() as conn:
        tables = {r[0] for r in conn.exec_driver_sql(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = 'composable_activation'")}  # fmt: skip
    engine.dispose()
    assert tables == {"members_a1", "membership_log_a1", "membership_stats"}


def _keyed_rows(store: ActivationStore, execute) -> None:
    """A membership with row hashes, a duplicated key and rows without a key, on `store`."""
    execute("CREATE TABLE analytics.people (customer_id TEXT, score INTEGER, city TEXT)")
    execute("INSERT INTO analytics.people VALUES ('a', 1, 'x'), ('b', 2, 'y'), ('b', 3, 'y'), "
            "(NULL, 4, 'z'), (NULL, 5, 'z'), ('c', 6, NULL), ('d', 0, 'w')")  # fmt: skip
    people = ModelDef(
        id="p", name="people", entity_type=EntityType.PARENT, primary_key="customer_id",
        columns={"customer_id": Column("customer_id", ColumnType.TEXT),
                 "score": Column("score", ColumnType.NUMBER),
                 "city": Column("city", ColumnType.TEXT)},
        table="analytics.people",
    )  # fmt: skip
    tree = {"type": "condition", "condition_type": "property", "column": "score",
            "operator": "greater_than", "value": 0}  # fmt: skip
    query = compile_members(
        tree, parent_model_id="p", schema=CatalogSchema(models={"p": people}),
        now=datetime.now(UTC), dialect=store.dialect, null_keys=True,
    )  # fmt: skip
    change = store.replace_members(
        audience_id="a-2", members=query.expression, row_hashes={"row_hash_t": ("city", "score")}
    )
    assert change == MembershipChange(3, None, None, None, rows_without_key=2)
    members = store.members_table("a-2").sql(dialect=store.dialect)
    with store.transaction() as conn:
        rows = conn.exec_driver_sql(
            f"SELECT entity_key, source_rows, row_hash_t IS NULL, key_hash IS NULL FROM {members} "
            "ORDER BY entity_key"
        ).all()
        assert store.membership_stats(conn, "a-2") == MembershipStats(1, 1, rows_without_key=2)
        assert store.membership_stats(conn, "never-materialized") is None
        hashes = dict(conn.exec_driver_sql(f"SELECT entity_key, row_hash_t FROM {members}").all())
    # One row per key; a key on two matching rows has no row hash (it is never sent).
    assert [tuple(r) for r in rows] == [("a", 1, False, False), ("b", 2, True, False),
                                        ("c", 1, False, False)]  # fmt: skip
    assert hashes["a"] != hashes["c"]


def test_memberships_store_row_hashes_and_count_keyless_rows(tmp_path: Path, pg_url: str) -> None:
    warehouse = tmp_path / "warehouse.duckdb"
    with duckdb.connect(str(warehouse)) as con:
        con.execute("CREATE SCHEMA analytics")

    def in_duckdb(sql: str) -> None:
        with duckdb.connect(str(warehouse)) as con:
            con.execute(sql)

    _keyed_rows(
        ActivationStore(warehouse_url=f"duckdb:///{warehouse}", home=tmp_path / "home"), in_duckdb
    )
    engine = sa.create_engine(pg_url)

    def in_postgres(sql: str) -> None:
        with engine.begin() as conn:
            conn.exec_driver_sql(sql)

    in_postgres("CREATE SCHEMA analytics")
    _keyed_rows(ActivationStore(warehouse_url=pg_url, home=tmp_path / "pg"), in_postgres)
    engine.dispose()


def test_writers_in_parallel_processes_are_serialized(tmp_path: Path) -> None:
    warehouse = tmp_path / "warehouse.duckdb"
    with duckdb.connect(str(warehouse)) as con:
        con.execute("CREATE SCHEMA analytics")
        con.execute("CREATE TABLE analytics.customers AS SELECT 'C' || i AS customer_id, "
                    "i % 100 AS score FROM range(2000000) t(i)")  # fmt: skip
    writer = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from tests.defs.test_activation import _members
        from composable_dagster.warehouse.activation import ActivationStore
        store = ActivationStore(warehouse_url="duckdb:///{warehouse}", home=Path("{tmp_path}"))
        for round in range(3):
            store.replace_members(audience_id=sys.argv[1], members=_members("duckdb", 10 + round))
        print(store.member_count(sys.argv[1]))
    """)
    root = Path(__file__).resolve().parents[2]
    processes = [
        subprocess.Popen([sys.executable, "-c", writer, f"aud-{n}"], cwd=root,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for n in range(3)
    ]  # fmt: skip
    outputs = [p.communicate(timeout=300) for p in processes]
    for process, (stdout, stderr) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, stderr
        assert stdout.strip() == str(2_000_000 * 87 // 100)  # scores 13..99 after round 3
