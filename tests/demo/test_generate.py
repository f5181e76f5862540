"""The demo-data generator: determinism and the shape of the data audiences rely on."""

from __future__ import annotations

import datetime
from collections.abc import Iterator

import duckdb
import pytest

from composable_dagster.demo.generate import RawCounts, generate_raw_duckdb, raw_content_hash

AS_OF = datetime.date(2026, 5, 1)
CUSTOMERS = 2_000


def _generate(*, customers: int = CUSTOMERS, seed: int = 42, as_of: datetime.date = AS_OF) -> str:
    con = duckdb.connect()
    try:
        generate_raw_duckdb(con, customers=customers, seed=seed, as_of=as_of)
        return raw_content_hash(con)
    finally:
        con.close()


@pytest.fixture(scope="module")
def con() -> Iterator[duckdb.DuckDBPyConnection]:
    connection = duckdb.connect()
    generate_raw_duckdb(connection, customers=CUSTOMERS, seed=42, as_of=AS_OF)
    yield connection
    connection.close()


def _one(con: duckdb.DuckDBPyConnection, query: str) -> tuple:
    return con.sql(query).fetchall()[0]


def test_same_arguments_give_identical_content() -> None:
    assert _generate() == _generate()


def test_content_does_not_depend_on_thread_count() -> None:
    # Large enough (~300k events, several row groups) for DuckDB to really run in parallel.
    hashes = []
    for threads in (1, 4):
        con = duckdb.connect()
        try:
            con.execute(f"SET threads = {threads}")
            generate_raw_duckdb(con, customers=30_000, seed=42, as_of=AS_OF)
            hashes.append(raw_content_hash(con))
        finally:
            con.close()
    assert hashes[0] == hashes[1]


@pytest.mark.parametrize(
    "changed",
    [{"seed": 43}, {"as_of": AS_OF + datetime.timedelta(days=1)}, {"customers": CUSTOMERS + 1}],
)
def test_changing_an_argument_changes_content(changed: dict) -> None:
    assert _generate(**changed) != _generate()


def test_regenerating_replaces_the_tables(con: duckdb.DuckDBPyConnection) -> None:
    scratch = duckdb.connect()
    try:
        first = generate_raw_duckdb(scratch, customers=500, seed=1, as_of=AS_OF)
        second = generate_raw_duckdb(scratch, customers=500, seed=1, as_of=AS_OF)
        assert first == second
        assert _one(scratch, "SELECT count(*) FROM raw.customers") == (500,)
    finally:
        scratch.close()


def test_rejects_an_empty_scale() -> None:
    with pytest.raises(ValueError, match="customers"):
        generate_raw_duckdb(duckdb.connect(), customers=0, as_of=AS_OF)


def test_counts_are_returned_and_in_expected_ranges(con: duckdb.DuckDBPyConnection) -> None:
    counts = RawCounts(
        *(_one(con, f"SELECT count(*) FROM raw.{t}")[0] for t in ("customers", "orders", "events"))
    )
    assert counts == generate_raw_duckdb(duckdb.connect(), customers=CUSTOMERS, as_of=AS_OF)
    assert counts.customers == CUSTOMERS
    assert 2.3 * CUSTOMERS <= counts.orders <= 3.8 * CUSTOMERS
    assert 7.5 * CUSTOMERS <= counts.events <= 13 * CUSTOMERS


def test_keys_are_unique_and_well_formed(con: duckdb.DuckDBPyConnection) -> None:
    assert _one(con, "SELECT min(customer_id), max(customer_id) FROM raw.customers") == (
        "C0000001",
        "C0002000",
    )
    keys = (("customers", "customer_id"), ("orders", "order_id"), ("events", "event_id"))
    for table, key in keys:
        total, distinct = _one(con, f"SELECT count(*), count(DISTINCT {key}) FROM raw.{table}")
        assert total == distinct, table
    orphans = _one(
        con,
        "SELECT count(*) FROM (SELECT customer_id FROM raw.orders UNION ALL "
        "SELECT customer_id FROM raw.events) WHERE customer_id NOT IN "
        "(SELECT customer_id FROM raw.customers)",
    )
    assert orphans == (0,)


def test_null_shares(con: duckdb.DuckDBPyConnection) -> None:
    email, phone, ltv, age = _one(
        con,
        "SELECT avg((email IS NULL)::INT), avg((phone IS NULL)::INT),"
        " avg((lifetime_value IS NULL)::INT), avg((age IS NULL)::INT) FROM raw.customers",
    )
    assert 0.01 <= email <= 0.06
    assert 0.06 <= phone <= 0.14
    assert 0.005 <= ltv <= 0.04
    assert 0.03 <= age <= 0.14


def test_countries_are_skewed_toward_the_us(con: duckdb.DuckDBPyConnection) -> None:
    shares = con.sql(
        "SELECT country, count(*) / sum(count(*)) OVER () AS share FROM raw.customers "
        "GROUP BY 1 ORDER BY 2 DESC"
    ).fetchall()
    assert shares[0][0] == "US"
    assert shares[0][1] > 0.3
    assert shares[1][0] == "GB"
    assert len(shares) >= 10
    assert all(len(code) == 2 and code.isupper() for code, _ in shares)


def test_emails_look_real_and_need_cleaning(con: duckdb.DuckDBPyConnection) -> None:
    malformed = _one(
        con,
        "SELECT count(*) FROM raw.customers WHERE email IS NOT NULL AND NOT regexp_matches("
        r"lower(trim(email)), '^[a-z._+0-9-]+@[a-z0-9-]+\.[a-z.]+$')",
    )
    assert malformed == (0,)
    messy = _one(con, "SELECT count(*) FROM raw.customers WHERE email <> lower(trim(email))")[0]
    assert 0.03 * CUSTOMERS <= messy <= 0.2 * CUSTOMERS
    gmail = _one(con, "SELECT avg((lower(email) LIKE '%@gmail.com%')::INT) FROM raw.customers")[0]
    assert 0.3 <= gmail <= 0.5


def test_phones_are_e164(con: duckdb.DuckDBPyConnection) -> None:
    bad = _one(
        con,
        "SELECT count(*) FROM raw.customers"
        r" WHERE NOT regexp_matches(phone, '^\+[1-9][0-9]{9,13}$')",
    )
    assert bad == (0,)
    assert _one(con, "SELECT count(*) > 0 FROM raw.customers WHERE phone LIKE '+44%'") == (True,)


def test_seed_example_filters_match_people(con: duckdb.DuckDBPyConnection) -> None:
    high_value = _one(con, "SELECT avg((lifetime_value > 1000)::INT) FROM raw.customers")[0]
    # About 6%: "thousands" at the default 100k customers.
    assert 0.03 <= high_value <= 0.10
    electronics_buyers = _one(
        con,
        "SELECT count(*) FROM (SELECT customer_id FROM raw.orders WHERE category = 'electronics' "
        "GROUP BY 1 HAVING count(*) >= 2)",
    )[0]
    assert electronics_buyers > 0.03 * CUSTOMERS
    recent_high_value = _one(
        con,
        "SELECT count(*) FROM raw.customers WHERE lifetime_value > 1000 AND customer_id IN "
        f"(SELECT customer_id FROM raw.events WHERE occurred_at >= DATE '{AS_OF}' - 30)",
    )[0]
    assert recent_high_value > 0


def test_orders_have_a_long_tail_and_many_zeros(con: duckdb.DuckDBPyConnection) -> None:
    zero_share, p50, max_orders = _one(
        con,
        "WITH n AS (SELECT c.customer_id, count(o.order_id) AS n FROM raw.customers c "
        "LEFT JOIN raw.orders o USING (customer_id) GROUP BY 1) "
        "SELECT avg((n = 0)::INT), median(n), max(n) FROM n",
    )
    assert 0.2 <= zero_share <= 0.45
    assert p50 <= 3
    assert max_orders >= 20
    categories = con.sql(
        "SELECT category FROM raw.orders GROUP BY 1 ORDER BY count(*) DESC"
    ).fetchall()
    assert [c for (c,) in categories][:1] == ["electronics"]
    assert len(categories) == 8


def test_events_are_written_in_time_order(con: duckdb.DuckDBPyConnection) -> None:
    out_of_order = _one(
        con,
        "SELECT count(*) FROM (SELECT occurred_at < lag(occurred_at) OVER (ORDER BY rowid) AS bad "
        "FROM raw.events) WHERE bad",
    )
    assert out_of_order == (0,)


def test_timestamps_fall_in_the_two_years_before_as_of(con: duckdb.DuckDBPyConnection) -> None:
    start = f"TIMESTAMP '{AS_OF}' - INTERVAL 730 DAY"
    end = f"TIMESTAMP '{AS_OF}'"
    for table, column in (
        ("customers", "signup_at"),
        ("orders", "ordered_at"),
        ("events", "occurred_at"),
    ):
        outside = _one(
            con, f"SELECT count(*) FROM raw.{table} WHERE {column} < {start} OR {column} >= {end}"
        )
        assert outside == (0,), table
    before_signup = _one(
        con,
        "SELECT count(*) FROM raw.customers c JOIN (SELECT customer_id, ordered_at AS at "
        "FROM raw.orders UNION ALL SELECT customer_id, occurred_at FROM raw.events) x "
        "USING (customer_id) WHERE x.at < c.signup_at",
    )
    assert before_signup == (0,)


def test_activity_is_skewed_toward_recent(con: duckdb.DuckDBPyConnection) -> None:
    last_30, first_30 = _one(
        con,
        f"SELECT count(*) FILTER (WHERE occurred_at >= TIMESTAMP '{AS_OF}' - INTERVAL 30 DAY),"
        f" count(*) FILTER (WHERE occurred_at < TIMESTAMP '{AS_OF}' - INTERVAL 700 DAY)"
        " FROM raw.events",
    )
    assert last_30 > 0.05 * CUSTOMERS * 10
    assert last_30 > 5 * first_30
    recent_orders = _one(
        con,
        "SELECT count(*) FROM raw.orders"
        f" WHERE ordered_at >= TIMESTAMP '{AS_OF}' - INTERVAL 30 DAY",
    )[0]
    assert recent_orders > 0


def test_event_properties_follow_the_event_type(con: duckdb.DuckDBPyConnection) -> None:
    rows = dict(
        con.sql(
            "SELECT event_type, list(DISTINCT channel ORDER BY channel) FROM raw.events GROUP BY 1"
        ).fetchall()
    )
    assert set(rows) == {
        "page_view",
        "product_view",
        "add_to_cart",
        "purchase",
        "email_open",
        "email_click",
        "app_open",
    }
    assert rows["email_open"] == ["email"]
    assert rows["app_open"] == ["android", "ios"]
    assert rows["page_view"] == ["android", "ios", "web"]
    revenue_ok = _one(
        con,
        "SELECT bool_and((revenue IS NOT NULL) = (event_type = 'purchase')),"
        " bool_and((product_category IS NOT NULL)"
        " = (event_type IN ('product_view', 'add_to_cart', 'purchase'))) FROM raw.events",
    )
    assert revenue_ok == (True, True)


def test_customers_and_orders_are_written_in_key_order(con: duckdb.DuckDBPyConnection) -> None:
    for table, key in (("customers", "customer_id"), ("orders", "order_id")):
        out_of_order = _one(
            con,
            f"SELECT count(*) FROM (SELECT {key} < lag({key}) OVER (ORDER BY rowid) AS bad "
            f"FROM raw.{table}) WHERE bad",
        )
        assert out_of_order == (0,), table


def test_connection_settings_are_restored() -> None:
    scratch = duckdb.connect()
    try:
        scratch.execute("SET preserve_insertion_order = false")
        first = generate_raw_duckdb(scratch, customers=300, as_of=AS_OF)
        first_hash = raw_content_hash(scratch)
        setting = _one(scratch, "SELECT current_setting('preserve_insertion_order')")
        assert setting == (False,)
        assert (
            _one(scratch, "SELECT count(*) FROM duckdb_tables() WHERE table_name LIKE '_demo%'")[0]
            == 0
        )
    finally:
        scratch.close()
    assert first.customers == 300
    assert first_hash == _generate(customers=300)
