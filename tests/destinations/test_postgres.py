"""The postgres destination against a real PostgreSQL server, plus the generic SQL path."""

from __future__ import annotations

import datetime as dt
import decimal
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pyarrow as pa
import pytest
import sqlalchemy as sa

from composable_dagster.destinations import DESTINATION_TYPES
from composable_dagster.destinations.base import (
    DeliveryError,
    Operation,
    RecordBatch,
    SyncContext,
    SyncMode,
)
from composable_dagster.destinations.postgres import (
    MAX_CONSECUTIVE_ROW_FAILURES,
    PostgresConfig,
    PostgresConnector,
    PostgresDestination,
    copy_payload,
)
from composable_dagster.errors import InvalidInputError
from tests.scopes import ANYWHERE

DESTINATION = PostgresDestination()
CONTEXT = SyncContext(sync_id="s1", run_id="r1", mode=SyncMode.MIRROR)
T0 = dt.datetime(2024, 1, 1, 12, 0, 0, 123456, tzinfo=dt.UTC)


def make_config(url: str, **overrides: object) -> PostgresConfig:
    config = DESTINATION.parse_config({"url": url, "table": "members", **overrides}, scope=ANYWHERE)
    assert isinstance(config, PostgresConfig)
    return config


def batch(operation: Operation, keys: list[str], rows: pa.Table | None = None) -> RecordBatch:
    rows = rows if rows is not None else member_rows(keys)
    return RecordBatch(operation=operation, keys=keys, rows=rows, idempotency_key="ik")


def member_rows(keys: list[str], *, bump: int = 0) -> pa.Table:
    n = len(keys)
    return pa.table(
        {
            "email": [f"{k}@example.com" for k in keys],
            "points": pa.array([i + bump for i in range(n)], pa.int64()),
            "ltv": [i / 4 for i in range(n)],
            "vip": [i % 2 == 0 for i in range(n)],
            "seen": pa.array(
                [T0 + dt.timedelta(days=i) for i in range(n)], pa.timestamp("us", "UTC")
            ),
        }
    )


def fetch(url: str, query: str) -> list[tuple]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(sa.text(query))]
    finally:
        engine.dispose()


def execute(url: str, statement: str) -> None:
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(statement))
    finally:
        engine.dispose()


@pytest.fixture
def run(pg_url: str) -> Iterator[PostgresConnector]:
    connector = DESTINATION.open(make_config(pg_url), context=CONTEXT)
    connector.sleep = lambda seconds: None
    yield connector
    connector.close(success=True)


def test_creates_the_table_with_types_from_arrow(pg_url: str, run: PostgresConnector) -> None:
    keys = ["a", "b"]
    rows = member_rows(keys).append_column("born", pa.array([dt.date(1990, 5, 1), None]))
    rows = rows.append_column("naive", pa.array([dt.datetime(2024, 1, 1, 8), None]))
    rows = rows.append_column(
        "price", pa.array([decimal.Decimal("1.25"), None], pa.decimal128(10, 2))
    )
    rows = rows.append_column("tags", pa.array([["x", "y"], None]))
    result = run.deliver(batch(Operation.ADD, keys, rows))
    assert result.confirmed == keys and not result.failed
    columns = fetch(
        pg_url,
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_name = 'members' ORDER BY ordinal_position",
    )
    assert columns == [
        ("entity_key", "text"),
        ("email", "text"),
        ("points", "bigint"),
        ("ltv", "double precision"),
        ("vip", "boolean"),
        ("seen", "timestamp with time zone"),
        ("born", "date"),
        ("naive", "timestamp without time zone"),
        ("price", "numeric"),
        ("tags", "text"),
    ]
    primary_key = fetch(
        pg_url,
        "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
        "AND a.attnum = ANY(i.indkey) WHERE i.indrelid = 'members'::regclass AND i.indisprimary",
    )
    assert primary_key == [("entity_key",)]
    assert fetch(pg_url, "SELECT born, naive, price, tags FROM members ORDER BY 1") == [
        (dt.date(1990, 5, 1), dt.datetime(2024, 1, 1, 8), decimal.Decimal("1.25"), '["x", "y"]'),
        (None, None, None, None),
    ]


def test_values_round_trip_exactly(pg_url: str, run: PostgresConnector) -> None:
    keys = ["k1", "k2", "k3", "k4"]
    rows = pa.table(
        {
            "text": ["Zürich 🚀", "", None, 'quote " , \\ \n tab\t'],
            "int": pa.array([-(2**63), None, 0, 2**63 - 1], pa.int64()),
            "float": [1.5, float("inf"), None, -0.0],
            "flag": [True, None, False, True],
            "ts": pa.array(
                [T0, None, dt.datetime(1969, 7, 20, 20, 17, tzinfo=dt.UTC), T0],
                pa.timestamp("us", "UTC"),
            ),
            "day": pa.array(
                [dt.date(2000, 1, 1), dt.date(1999, 12, 31), None, dt.date(2100, 1, 1)]
            ),
            "nothing": pa.nulls(4),
        }
    )
    assert run.deliver(batch(Operation.ADD, keys, rows)).confirmed == keys
    got = fetch(pg_url, 'SELECT entity_key, text, "int", "float", flag, ts, day, nothing '
                "FROM members ORDER BY entity_key")  # fmt: skip
    expected = [
        (k, *(rows.column(c)[i].as_py() for c in rows.column_names)) for i, k in enumerate(keys)
    ]
    assert got == expected


def test_upsert_is_idempotent_and_updates_change_values(
    pg_url: str, run: PostgresConnector
) -> None:
    keys = [f"c{i:03d}" for i in range(300)]
    first = batch(Operation.ADD, keys)
    assert run.deliver(first).confirmed == keys
    # A re-sent batch (the engine crashed before committing its snapshot) leaves one row each.
    assert run.deliver(first).confirmed == keys
    assert fetch(pg_url, "SELECT count(*), count(DISTINCT entity_key) FROM members") == [(300, 300)]

    changed = batch(Operation.UPDATE, keys[:10], member_rows(keys[:10], bump=1000))
    assert run.deliver(changed).confirmed == keys[:10]
    assert fetch(pg_url, "SELECT sum(points) FROM members") == [(sum(range(300)) + 10 * 1000,)]
    # ADD after a conflict has switched the run to the merge path: new keys still insert.
    more = [f"d{i}" for i in range(5)]
    assert run.deliver(batch(Operation.ADD, more)).confirmed == more
    # An update of a key that is missing inserts it (upsert).
    assert run.deliver(batch(Operation.UPDATE, ["zz"])).confirmed == ["zz"]
    assert fetch(pg_url, "SELECT count(*) FROM members") == [(306,)]


def test_a_table_created_for_updates_keeps_updated_rows_on_their_page(
    pg_url: str, run: PostgresConnector
) -> None:
    # A mirror sync updates rows: its table leaves room on each page, so an update of every
    # row writes each new version beside the old one (HOT) instead of on a new page with a
    # new index entry.
    keys = [f"c{i:05d}" for i in range(4_000)]
    assert run.deliver(batch(Operation.ADD, keys)).confirmed == keys
    assert fetch(pg_url, "SELECT reloptions FROM pg_class WHERE relname = 'members'") == [
        (["fillfactor=50"],)
    ]
    page = "SELECT entity_key, (ctid::text::point)[0] FROM members ORDER BY 1"
    before = fetch(pg_url, page)
    assert len({block for _, block in before}) > 1  # the rows span several pages
    changed = batch(Operation.UPDATE, keys, member_rows(keys, bump=1))
    assert run.deliver(changed).confirmed == keys
    assert fetch(pg_url, "SELECT sum(points) FROM members") == [(sum(range(4_000)) + 4_000,)]
    assert fetch(pg_url, page) == before


def test_a_table_created_for_adds_only_is_packed(pg_url: str) -> None:
    context = SyncContext(sync_id="s1", run_id="r1", mode=SyncMode.ADD)
    connector = DESTINATION.open(make_config(pg_url), context=context)
    try:
        assert connector.deliver(batch(Operation.ADD, ["a", "b"])).confirmed == ["a", "b"]
    finally:
        connector.close(success=True)
    assert fetch(pg_url, "SELECT reloptions FROM pg_class WHERE relname = 'members'") == [(None,)]


def test_remove_deletes_by_key(pg_url: str, run: PostgresConnector) -> None:
    keys = ["a", "b", "c", "d"]
    run.deliver(batch(Operation.ADD, keys))
    result = run.deliver(batch(Operation.REMOVE, ["b", "d", "never-there"]))
    assert result.confirmed == ["b", "d", "never-there"] and not result.failed
    assert fetch(pg_url, "SELECT entity_key FROM members ORDER BY 1") == [("a",), ("c",)]
    assert run.deliver(batch(Operation.REMOVE, ["b"])).confirmed == ["b"]  # idempotent


@pytest.mark.parametrize("operation", [Operation.ADD, Operation.UPDATE])
def test_row_failures_are_attributed_to_their_keys(
    pg_url: str, run: PostgresConnector, operation: Operation
) -> None:
    run.deliver(batch(Operation.ADD, ["seed"]))
    execute(pg_url, "ALTER TABLE members ALTER COLUMN email SET NOT NULL")
    execute(pg_url, "ALTER TABLE members ADD CONSTRAINT points_small CHECK (points < 990)")
    keys = [f"c{i:04d}" for i in range(1000)]
    rows = member_rows(keys)
    emails = rows.column("email").to_pylist()
    for bad in (3, 500, 777):
        emails[bad] = None
    rows = rows.set_column(0, "email", pa.array(emails))
    result = run.deliver(batch(operation, keys, rows))
    failed = {"c0003", "c0500", "c0777"} | {f"c{i:04d}" for i in range(990, 1000)}
    assert set(result.failed) == failed
    assert 'null value in column "email"' in result.failed["c0500"]
    assert "points_small" in result.failed["c0995"]
    assert all("\n" not in reason for reason in result.failed.values())
    assert sorted(result.confirmed) == sorted(set(keys) - failed)
    assert fetch(pg_url, "SELECT count(*) FROM members") == [(1 + 1000 - len(failed),)]


def test_a_table_wide_failure_stops_bisecting(pg_url: str, run: PostgresConnector) -> None:
    run.deliver(batch(Operation.ADD, ["seed"]))
    execute(pg_url, "ALTER TABLE members ADD COLUMN tier text NOT NULL DEFAULT 'x'")
    execute(pg_url, "ALTER TABLE members ALTER COLUMN tier DROP DEFAULT")
    # Every row fails (an unmapped NOT NULL column): one transaction per row would be slow.
    keys = [f"c{i:04d}" for i in range(2_000)]
    result = run.deliver(batch(Operation.ADD, keys))
    assert not result.confirmed and set(result.failed) == set(keys)
    tried = [r for r in result.failed.values() if not r.startswith("not tried")]
    assert len(tried) == MAX_CONSECUTIVE_ROW_FAILURES
    assert 'null value in column "tier"' in result.failed["c1999"]


def test_value_out_of_range_for_an_existing_column_fails_that_row(pg_url: str) -> None:
    execute(pg_url, "CREATE TABLE members (entity_key varchar(20) PRIMARY KEY, points integer)")
    connector = DESTINATION.open(make_config(pg_url), context=CONTEXT)
    try:
        rows = pa.table({"points": pa.array([1, 3_000_000_000, None], pa.int64())})
        result = connector.deliver(batch(Operation.ADD, ["a", "b", "c"], rows))
    finally:
        connector.close(success=True)
    assert result.confirmed == ["a", "c"]
    assert "out of range" in result.failed["b"]
    assert fetch(pg_url, "SELECT * FROM members ORDER BY 1") == [("a", 1), ("c", None)]


def test_existing_table_missing_a_mapped_column_is_a_config_error(pg_url: str) -> None:
    execute(pg_url, "CREATE TABLE members (entity_key text PRIMARY KEY, email text)")
    config = make_config(pg_url)
    fields = SyncContext(sync_id="s", run_id="r", mode=SyncMode.ADD, fields=("email", "points"))
    with pytest.raises(InvalidInputError, match=r"no column for mapped field.*points") as err:
        DESTINATION.open(config, context=fields)
    assert err.value.field == "config.table"
    # Without the field list at open, the first batch says the same before writing anything.
    connector = DESTINATION.open(config, context=CONTEXT)
    with pytest.raises(InvalidInputError, match="points"):
        connector.deliver(batch(Operation.ADD, ["a"]))
    connector.close(success=False)
    assert fetch(pg_url, "SELECT count(*) FROM members") == [(0,)]


def test_existing_table_needs_a_unique_key_column(pg_url: str) -> None:
    execute(pg_url, "CREATE TABLE members (entity_key text, email text)")
    with pytest.raises(InvalidInputError, match="not a primary key or unique"):
        DESTINATION.open(make_config(pg_url), context=CONTEXT)
    execute(pg_url, "CREATE UNIQUE INDEX members_key ON members (entity_key)")
    connector = DESTINATION.open(make_config(pg_url), context=CONTEXT)
    rows = pa.table({"email": ["a@x"]})
    assert connector.deliver(batch(Operation.ADD, ["a"], rows)).confirmed == ["a"]
    assert connector.deliver(batch(Operation.ADD, ["a"], rows)).confirmed == ["a"]
    connector.close(success=True)
    with pytest.raises(InvalidInputError, match=r"config\.key_column"):
        DESTINATION.open(make_config(pg_url, key_column="id"), context=CONTEXT)


def test_missing_table_without_create_table_is_a_config_error(pg_url: str) -> None:
    with pytest.raises(InvalidInputError, match="does not exist"):
        DESTINATION.open(make_config(pg_url, create_table=False), context=CONTEXT)
    assert not DESTINATION.check_connection(make_config(pg_url, create_table=False)).ok


def test_identifiers_are_quoted_not_interpolated(pg_url: str) -> None:
    table = 'Crm Data.Members "VIP"; DROP TABLE x'
    config = make_config(pg_url, table=table, key_column="Customer Key")
    connector = DESTINATION.open(config, context=CONTEXT)
    rows = pa.table({"First Name": ["Ann"], 'we"ird': [1]})
    try:
        assert connector.deliver(batch(Operation.ADD, ["k"], rows)).confirmed == ["k"]
        assert connector.deliver(batch(Operation.UPDATE, ["k"], rows)).confirmed == ["k"]
        assert connector.deliver(batch(Operation.REMOVE, ["k"], rows)).confirmed == ["k"]
        assert connector.deliver(batch(Operation.ADD, ["k2"], rows)).confirmed == ["k2"]
    finally:
        connector.close(success=True)
    got = fetch(pg_url, 'SELECT "Customer Key", "First Name", "we""ird" FROM '
                '"Crm Data"."Members ""VIP""; DROP TABLE x"')  # fmt: skip
    assert got == [("k2", "Ann", 1)]
    assert DESTINATION.check_connection(config).ok


def test_lost_connection_is_retried_on_a_new_one(pg_url: str, run: PostgresConnector) -> None:
    run.deliver(batch(Operation.ADD, ["a"]))
    assert run._pg is not None
    pid = run._pg.info.backend_pid
    execute(pg_url, f"SELECT pg_terminate_backend({pid})")
    sleeps: list[float] = []
    run.sleep = sleeps.append
    assert run.deliver(batch(Operation.UPDATE, ["a", "b"])).confirmed == ["a", "b"]
    assert len(sleeps) == 1 and run._pg.info.backend_pid != pid
    assert fetch(pg_url, "SELECT count(*) FROM members") == [(2,)]


def test_unreachable_database_fails_the_destination(pg_url: str) -> None:
    bad = sa.make_url(pg_url).set(port=1).render_as_string(hide_password=False)
    with pytest.raises(DeliveryError, match="postgres"):
        DESTINATION.open(make_config(bad), context=CONTEXT)
    check = DESTINATION.check_connection(make_config(bad))
    assert not check.ok and "composable_test@" not in check.message


def test_check_connection_reports_what_the_sync_can_do(pg_url: str) -> None:
    check = DESTINATION.check_connection(make_config(pg_url))
    assert check.ok and "will be created" in check.message
    execute(pg_url, "CREATE TABLE members (entity_key text PRIMARY KEY)")
    check = DESTINATION.check_connection(make_config(pg_url))
    assert check.ok and "writable" in check.message


def test_binary_copy_is_used_when_types_match_and_csv_otherwise() -> None:
    data = pa.table({"k": ["a"], "n": pa.array([1], pa.int64()), "s": ["x"]})
    assert copy_payload(data, pg_types={"k": "text", "n": "bigint", "s": "text"})[0] == "binary"
    # A column type the encoder does not speak: the server parses CSV instead.
    assert copy_payload(data, pg_types={"k": "text", "n": "numeric", "s": "text"})[0] == "csv"
    # An int64 beyond an integer column cannot be encoded; the server reports the row.
    big = data.set_column(1, "n", pa.array([2**40], pa.int64()))
    assert copy_payload(big, pg_types={"k": "text", "n": "integer", "s": "text"})[0] == "csv"
    _, order, _ = copy_payload(data, pg_types={"k": "text", "n": "bigint", "s": "text"})
    assert order == ("n", "k", "s")  # fixed-width columns first


@pytest.mark.parametrize("database", ["sqlite", "duckdb"])
def test_generic_path_on_other_databases(tmp_path: Path, database: str) -> None:
    url = f"{database}:///{tmp_path / 'dest.db'}"
    config = make_config(url)
    connector = DESTINATION.open(config, context=CONTEXT)
    assert not connector.fast_path
    keys = [f"c{i}" for i in range(1_500)]
    assert connector.deliver(batch(Operation.ADD, keys)).confirmed == keys
    assert connector.deliver(batch(Operation.ADD, keys)).confirmed == keys  # idempotent
    updated = batch(Operation.UPDATE, keys[:2], member_rows(keys[:2], bump=100))
    assert connector.deliver(updated).confirmed == keys[:2]
    assert connector.deliver(batch(Operation.REMOVE, keys[1_000:])).confirmed == keys[1_000:]
    connector.close(success=True)
    assert DESTINATION.check_connection(config).ok
    assert fetch(url, "SELECT count(*) FROM members") == [(1_000,)]
    assert fetch(url, "SELECT points FROM members WHERE entity_key IN ('c0', 'c1') ORDER BY 1") == [
        (100,),
        (101,),
    ]


def test_generic_path_attributes_row_failures(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'dest.db'}"
    execute(url, "CREATE TABLE members (entity_key TEXT PRIMARY KEY, email TEXT NOT NULL)")
    connector = DESTINATION.open(make_config(url), context=CONTEXT)
    rows = pa.table({"email": ["a@x", None, "c@x", None]})
    result = connector.deliver(batch(Operation.ADD, ["a", "b", "c", "d"], rows))
    connector.close(success=True)
    assert sorted(result.confirmed) == ["a", "c"]
    assert set(result.failed) == {"b", "d"} and "NOT NULL" in result.failed["b"]


def test_registered_with_all_modes() -> None:
    assert DESTINATION_TYPES["postgres"].capabilities.modes == frozenset(SyncMode)
    assert DESTINATION.batch_size(make_config("sqlite://")) == 50_000
    assert "password" not in repr(make_config("postgresql://u:password@h/db"))
    with pytest.raises(InvalidInputError, match=r"config\.table"):
        DESTINATION.parse_config({"url": "sqlite://", "table": "a.b.c"}, scope=ANYWHERE)
    with pytest.raises(InvalidInputError, match=r"config\.url"):
        DESTINATION.parse_config({"url": "not a url", "table": "t"}, scope=ANYWHERE)
    assert psycopg.__version__ >= "3"
