"""Workspace SQL is sandboxed: each test tries an attack and checks the refusal, then that the
legitimate query next to it still works.

Through the API (model preview, SQL models, `sql` traits, table models) the parser of
filters/user_sql.py refuses; below it, the DuckDB connections themselves (the API's
warehouse and the activation store that run workers query) refuse files, extensions and
settings; on PostgreSQL the session is read-only and has a statement timeout. The catalog
is SQLite here only: it is the file an attacker wants to read (the API tests run the same
endpoints on both catalogs).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import httpx
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from composable_dagster.api.app import create_app
from composable_dagster.catalog.db import catalog_session
from composable_dagster.catalog.tables import Model
from composable_dagster.errors import WarehouseError, WarehouseRejectedError
from composable_dagster.filters import CompiledQuery, FilterError, compile_members
from composable_dagster.filters.schema import (
    CatalogSchema,
    Column,
    ColumnType,
    EntityType,
    ModelDef,
)
from composable_dagster.filters.user_sql import parse_select, rules_for
from composable_dagster.settings import Settings
from composable_dagster.warehouse import Warehouse
from composable_dagster.warehouse.activation import ActivationStore

from ..api.conftest import Tenant, make_tenant
from ..conftest import free_port
from ..defs.test_activation import customers_warehouse

AUDIENCE_ID = "a0d10000-0000-4000-8000-00000000000a"
TABLE_FUNCTION = "may not call table functions"
PATH_AS_TABLE = "not file paths or URLs"
SYSTEM_FUNCTION = "may not call functions that reach files, settings"


@pytest.fixture
def catalog_url(tmp_path: Path) -> str:
    """The catalog where the server keeps it by default: in $COMPOSABLE_HOME."""
    return f"sqlite:///{tmp_path / 'home' / 'catalog.sqlite'}"


def preview(client: TestClient, tenant: Tenant, sql: str) -> httpx.Response:
    return client.post(tenant.url("/models/preview"), json={"sql_query": sql},
                       headers=tenant.headers)  # fmt: skip


def assert_refused(response: httpx.Response, field: str, *fragments: str) -> None:
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error.startswith(f"{field}: "), error
    for fragment in fragments:
        assert fragment in error, error


def preview_rows(client: TestClient, tenant: Tenant, sql: str) -> list[dict]:
    response = preview(client, tenant, sql)
    assert response.status_code == 200, response.text
    return response.json()["rows"]


def everyone(**source: str) -> CompiledQuery:
    """The members of an empty tree over a `customers` model with this table or SQL: what
    a run worker compiles before the activation store runs it."""
    model = ModelDef(
        id="m", name="customers", entity_type=EntityType.PARENT, primary_key="customer_id",
        columns={"customer_id": Column("customer_id", ColumnType.TEXT)}, **source,
    )  # fmt: skip
    return compile_members({"type": "and", "children": []}, parent_model_id="m",
                           schema=CatalogSchema(models={"m": model}), now=datetime.now(UTC),
                           dialect="duckdb")  # fmt: skip


def test_table_functions_are_refused_and_data_generators_work(
    client: TestClient, tenant: Tenant, settings: Settings
) -> None:
    home = settings.home_dir
    for sql, shown in [
        ("SELECT content FROM read_text('/etc/hostname')", "read_text('/etc/hostname')"),
        (f"SELECT file FROM glob('{home}/*')", "glob("),
        ("SELECT * FROM query('SELECT 42')", "query('SELECT 42')"),
        ("SELECT * FROM query_table('analytics.customers')", "query_table("),
        (f"SELECT content FROM read_blob('{home}/catalog.sqlite')", "read_blob("),
        (f"SELECT * FROM sqlite_scan('{home}/catalog.sqlite', 'destinations')", "sqlite_scan("),
        ("SELECT * FROM read_csv('/etc/passwd')", "READ_CSV('/etc/passwd')"),
        ("SELECT * FROM duckdb_settings()", "duckdb_settings()"),
        ("SELECT * FROM iceberg_scan('s3://bucket/table')", "iceberg_scan("),
        ("SELECT * FROM json_execute_serialized_sql('{}')", "json_execute_serialized_sql("),
        # Nested, in a union, as a lateral join: wherever a FROM item is.
        ("SELECT (SELECT content FROM read_text('/etc/hostname')) AS c", "read_text("),
        ("SELECT 1 AS n UNION ALL SELECT size FROM read_blob('/etc/hostname')", "read_blob("),
        ("SELECT * FROM analytics.customers, LATERAL read_csv('/etc/passwd')", "READ_CSV("),
    ]:
        assert_refused(preview(client, tenant, sql), "sql_query", f"{shown}", TABLE_FUNCTION)
    assert preview_rows(client, tenant, "SELECT * FROM range(3) t(n)") == [
        {"n": 0}, {"n": 1}, {"n": 2}
    ]  # fmt: skip
    assert preview_rows(client, tenant, "SELECT * FROM generate_series(1, 2) t(n)") == [
        {"n": 1}, {"n": 2}
    ]  # fmt: skip
    assert preview_rows(client, tenant, "SELECT * FROM unnest(['a', 'b']) t(s)") == [
        {"s": "a"}, {"s": "b"}
    ]  # fmt: skip


def test_file_paths_and_urls_as_tables_are_refused(
    client: TestClient, tenant: Tenant, settings: Settings
) -> None:
    for sql in [
        "SELECT * FROM '/etc/passwd'",
        "SELECT * FROM 's3://bucket/data.parquet'",
        "SELECT * FROM 'https://example.com/x.csv'",
        'SELECT * FROM "customers.csv"',
        "SELECT * FROM '/etc/host*'",
        f"SELECT * FROM '{settings.home_dir / 'catalog.sqlite'}'",
    ]:
        assert_refused(preview(client, tenant, sql), "sql_query", PATH_AS_TABLE)
    rows = preview_rows(client, tenant, 'SELECT count(*) AS n FROM "analytics"."customers"')
    assert rows == [{"n": 3}]


def test_other_databases_reserved_schemas_and_system_catalogs_are_refused(
    client: TestClient, tenant: Tenant
) -> None:
    for sql, reason in [
        ("SELECT * FROM activation.composable_activation.membership_stats", "another database"),
        ("SELECT * FROM warehouse.analytics.customers", "another database"),
        ("SELECT * FROM composable_activation.membership_stats", "reserved"),
        ('SELECT * FROM "COMPOSABLE_ACTIVATION".membership_stats', "reserved"),
        ("SELECT * FROM activation.membership_stats", "reserved"),  # a database as a schema
        ("SELECT * FROM system.duckdb_tables", "reserved"),
        ("SELECT * FROM temp.t", "reserved"),
        ("SELECT table_name FROM information_schema.tables", "reserved"),
        ("SELECT relname FROM pg_catalog.pg_class", "reserved"),
        ("SELECT table_name FROM duckdb_tables", "system catalogs"),
        ("SELECT relname FROM pg_class", "system catalogs"),
        ("SELECT sql FROM sqlite_master", "system catalogs"),
    ]:
        assert_refused(preview(client, tenant, sql), "sql_query", "is not allowed", reason)
    rows = preview_rows(
        client,
        tenant,
        "WITH c AS (SELECT * FROM analytics.customers) SELECT count(*) AS n FROM c "
        "JOIN analytics.orders o USING (customer_id)",
    )
    assert rows == [{"n": 3}]


def test_functions_that_reach_settings_files_or_sequences_are_refused(
    client: TestClient, tenant: Tenant
) -> None:
    for sql in [
        "SELECT current_setting('temp_directory') AS s",
        "SELECT getenv('HOME') AS h",
        "SELECT getvariable('x') AS v",
        "SELECT read_text('/etc/hostname') AS t",
        "SELECT which_secret('s3://bucket/x', 's3') AS w",
        "SELECT nextval('seq') AS n",
    ]:
        assert_refused(preview(client, tenant, sql), "sql_query", SYSTEM_FUNCTION)
    rows = preview_rows(
        client,
        tenant,
        "SELECT lower(email) AS e, regexp_matches(email, '^a') AS a FROM analytics.customers "
        "WHERE email LIKE '%@example.com' ORDER BY 1",
    )
    assert rows == [{"e": "alice@example.com", "a": True}, {"e": "bob@example.com", "a": False}]


def test_functions_that_run_sql_text_read_the_engine_or_sleep_are_refused(
    client: TestClient, tenant: Tenant
) -> None:
    """DuckDB's binder runs SQL handed to it as text: json_serialize_plan put table names,
    settings and other workspaces' counts of the activation store into a plan. A query that
    sleeps holds a run's writer lock. On DuckDB only reviewed built-in functions pass."""
    for sql, reason in [
        ("SELECT json_serialize_plan('SELECT count(*) FROM members_x') AS p", SYSTEM_FUNCTION),
        ("SELECT json_serialize_sql('SELECT 1') AS s", SYSTEM_FUNCTION),
        ("SELECT json_deserialize_sql(json_serialize_sql('SELECT 1')) AS s", SYSTEM_FUNCTION),
        ("SELECT json_execute_serialized_sql('{}') AS s", SYSTEM_FUNCTION),
        ("SELECT customer_id FROM analytics.customers WHERE sleep_ms(8000) IS NULL",
         SYSTEM_FUNCTION),
        ("SELECT pg_sleep(1) AS s", SYSTEM_FUNCTION),
        ("SELECT current_query() AS q", SYSTEM_FUNCTION),
        ("SELECT version() AS v", SYSTEM_FUNCTION),
        ("SELECT stats(customer_id) AS s FROM analytics.customers", SYSTEM_FUNCTION),
        ("SELECT index_key({'table': 'customers'}, 'pk', 'C1') AS k", SYSTEM_FUNCTION),
        ("SELECT to_aggregate_state({'count': 1, 'value': 4.0}, 'avg', ['DOUBLE']) AS s",
         SYSTEM_FUNCTION),
        # sqlglot renders these as a call of the function their first argument names.
        ("SELECT ANONYMOUS_AGG_FUNC(sleep_ms, 8000) AS s", "internal function forms"),
        ("SELECT my_macro(1) AS m", "my_macro is not one of the duckdb built-in functions"),
        ("SELECT * FROM pragma_database_list", "system catalogs"),
    ]:  # fmt: skip
        assert_refused(preview(client, tenant, sql), "sql_query", "is not allowed", reason)
    rows = preview_rows(
        client,
        tenant,
        "SELECT list_transform([1, 2], x -> x * 2) AS l, strftime(DATE '2024-01-02', '%Y') AS y, "
        "regexp_replace('abc', 'b', 'x') AS r, json_extract_string('{\"a\": \"b\"}', '$.a') AS j, "
        "md5_number('a') IS NOT NULL AS h, count(*) OVER () AS n",
    )
    assert rows == [{"l": [2, 4], "y": "2024", "r": "axc", "j": "b", "h": True, "n": 1}]


# Functions whose description uses one of the words below for something else (a bound
# variable's name, a file name taken apart as text, SQL Server's rounding).
_REVIEWED_WORDING = {"struct_insert", "struct_pack", "struct_update", "union_value",
                     "parse_filename", "decimal_division", "regr_avgx", "regr_avgy"}  # fmt: skip
_REACHES = re.compile(
    r"\b(sql|query|queries|plans?|files?|settings?|secrets?|catalogs?|databases?|schemas?|"
    r"tables?|sleeps?|logger|logs|variables?|environment|sequences?)\b"
)


def test_no_duckdb_function_workspace_sql_may_call_reaches_beyond_its_arguments() -> None:
    """Against the installed DuckDB's own list of its functions: none that workspace SQL may
    call says, in its parameters or description, that it takes SQL, plans, files, settings,
    secrets, the catalog or sleeps. A DuckDB upgrade that adds one to an allowed family
    fails here until it is reviewed."""
    rules = rules_for("duckdb")
    assert rules.allowed_functions is not None
    with duckdb.connect() as con:
        functions = con.execute(
            "SELECT function_name, parameters, description FROM duckdb_functions() "
            "WHERE function_type NOT IN ('table', 'table_macro', 'pragma')"
        ).fetchall()
    callable_ = {
        name: " ".join([*(parameters or []), description or ""]).lower()
        for name, parameters, description in functions
        if name in rules.allowed_functions and name not in rules.denied_functions
    }
    assert {"lower", "list_transform", "regexp_matches", "sum", "row_number"} <= set(callable_)
    reaching = {name for name, text in callable_.items() if _REACHES.search(text)}
    assert reaching <= _REVIEWED_WORDING, sorted(reaching - _REVIEWED_WORDING)


def _at_stack_depth(frames: int, call: Callable[[], str]) -> str:
    return call() if frames == 0 else _at_stack_depth(frames - 1, call)


def _parsed(sql: str) -> str:
    try:
        parse_select(sql, dialect="duckdb", field="sql_query")
    except FilterError as err:
        return err.message
    return "accepted"


def test_nesting_is_refused_by_a_limit_not_by_the_stack(client: TestClient, tenant: Tenant) -> None:
    """The same SQL got 201 at some call depths and "nested too deeply" at others (and a
    RecursionError in the code location): the limits are counted before sqlglot recurses."""
    deep = "SELECT customer_id, " + "(" * 490 + "1" + ")" * 490 + " AS v FROM analytics.customers"
    at_limit = "SELECT customer_id, " + "(" * 64 + "1" + ")" * 64 + " AS v FROM analytics.customers"
    unary = "SELECT " + "NOT " * 100 + "TRUE AS t"
    casts = "SELECT 1" + "::INTEGER" * 200 + " AS n"
    for frames in (0, 250, 500):
        for sql in (deep, unary):
            assert _at_stack_depth(frames, lambda sql=sql: _parsed(sql)) == (
                "nested too deeply: more than 64 levels of parentheses, brackets, CASE or "
                "unary operators"
            )
        assert _at_stack_depth(frames, lambda: _parsed(casts)) == (
            "nested too deeply: expressions more than 128 levels deep"
        )
        assert _at_stack_depth(frames, lambda: _parsed(at_limit)) == "accepted"
    body = {"name": "deep", "primary_key_column": "customer_id", "sql_query": deep}
    created = client.post(tenant.url("/models"), json=body, headers=tenant.headers)
    assert_refused(created, "sql_query", "nested too deeply")
    nested_list = "SELECT " + "[" * 300 + "1" + "]" * 300 + " AS l"
    assert_refused(preview(client, tenant, nested_list), "sql_query", "nested too deeply")
    body["sql_query"] = at_limit
    assert client.post(tenant.url("/models"), json=body, headers=tenant.headers).status_code == 201


def test_only_one_read_query_is_accepted(client: TestClient, tenant: Tenant) -> None:
    for sql, message in [
        ("SELECT * FROM (DESCRIBE analytics.customers)", "DESCRIBE is not allowed"),
        ("SELECT * FROM (SUMMARIZE analytics.customers)", "SUMMARIZE is not allowed"),
        ("DROP TABLE analytics.customers", "must be exactly one SELECT"),
        ("SELECT 1; SELECT 2", "must be exactly one SELECT"),
        ("ATTACH '/tmp/other.duckdb' AS other", "must be exactly one SELECT"),
        ("SELECT $1 AS p", "may not use parameters"),
        ("SELECT 'abc", "not valid SQL"),
    ]:
        assert_refused(preview(client, tenant, sql), "sql_query", message)
    assert preview_rows(client, tenant, "SELECT 1 AS a UNION ALL SELECT 2") == [{"a": 1}, {"a": 2}]


def test_sql_models_and_sql_traits_follow_the_same_rule(
    client: TestClient, tenant: Tenant, catalog: dict[str, str]
) -> None:
    model = {"name": "hostname", "primary_key_column": "content",
             "sql_query": "SELECT content FROM read_text('/etc/hostname')"}  # fmt: skip
    created = client.post(tenant.url("/models"), json=model, headers=tenant.headers)
    assert_refused(created, "sql_query", "read_text('/etc/hostname')", TABLE_FUNCTION)
    model |= {"sql_query": "SELECT customer_id AS content FROM analytics.customers"}
    assert client.post(tenant.url("/models"), json=model, headers=tenant.headers).status_code == 201

    trait = {"name": "Host", "slug": "host", "parent_model_id": catalog["customers"],
             "trait_type": "sql", "result_type": "string",
             "config": {"sql": "SELECT customer_id AS entity_key, content AS value "
                               "FROM analytics.customers, read_text('/etc/hostname')"}}  # fmt: skip
    refused = client.post(tenant.url("/traits"), json=trait, headers=tenant.headers)
    assert_refused(refused, "config.sql", "read_text('/etc/hostname')", TABLE_FUNCTION)
    trait["config"] = {"sql": "SELECT customer_id AS entity_key, country AS value "
                              "FROM analytics.customers"}  # fmt: skip
    assert client.post(tenant.url("/traits"), json=trait, headers=tenant.headers).status_code == 201


def test_table_models_refuse_reserved_schemas_and_dotted_names(
    client: TestClient, tenant: Tenant
) -> None:
    def create(schema: str | None, table: str) -> httpx.Response:
        body = {"name": f"m {schema} {table}", "source_schema": schema, "source_table": table,
                "primary_key_column": "customer_id"}  # fmt: skip
        return client.post(tenant.url("/models"), json=body, headers=tenant.headers)

    assert_refused(create("composable_activation", "membership_stats"), "source_schema",
                   "'composable_activation' is reserved")  # fmt: skip
    assert_refused(create("information_schema", "tables"), "source_schema", "reserved")
    assert_refused(create("activation", "membership_stats"), "source_schema", "reserved")
    # One name each: a dot would have become a catalog or schema part.
    assert_refused(create(None, "analytics.customers"), "source_table", "no dots")
    assert_refused(create("warehouse.analytics", "customers"), "source_schema", "no dots")
    assert_refused(create(None, "customers.csv"), "source_table", "no dots")
    assert_refused(create(None, "duckdb_tables"), "source_table", "system catalogs")
    shown = client.post(
        tenant.url("/models/preview"),
        json={"source_schema": "information_schema", "source_table": "tables"},
        headers=tenant.headers,
    )
    assert_refused(shown, "source_schema", "reserved")
    assert create("analytics", "customers").status_code == 201


def test_a_row_stored_before_the_rules_fails_with_the_same_error(
    client: TestClient, tenant: Tenant, settings: Settings
) -> None:
    """Stored model SQL is parsed again when compiled (estimates here, materializations in
    the run worker): a row written before the parser refused it cannot run."""
    body = {"name": "spenders", "primary_key_column": "customer_id",
            "sql_query": "SELECT customer_id, lifetime_value FROM analytics.customers"}  # fmt: skip
    model_id = client.post(tenant.url("/models"), json=body, headers=tenant.headers).json()["id"]
    table_body = {"name": "customers", "source_schema": "analytics",
                  "source_table": "customers", "primary_key_column": "customer_id"}  # fmt: skip
    table_id = client.post(tenant.url("/models"), json=table_body, headers=tenant.headers)
    table_id = table_id.json()["id"]
    tree = {"type": "and", "children": []}

    def estimate(model: str) -> httpx.Response:
        return client.post(tenant.url(f"/models/{model}/estimate-filter"),
                           json={"filter_tree": tree}, headers=tenant.headers)  # fmt: skip

    assert estimate(model_id).json()["estimated_size"] == 3
    assert estimate(table_id).json()["estimated_size"] == 3
    with catalog_session(settings.resolved_catalog_url) as session:
        session.get(Model, model_id).sql_query = (
            "SELECT customer_id, content AS lifetime_value FROM analytics.customers, "
            "read_text('/etc/hostname')"
        )
        session.get(Model, table_id).source_schema = "composable_activation"
    assert_refused(estimate(model_id), "parent_model_id", "model spenders: read_text(",
                   TABLE_FUNCTION)  # fmt: skip
    assert_refused(estimate(table_id), "parent_model_id", "'composable_activation' is reserved")
    with catalog_session(settings.resolved_catalog_url) as session:
        row = session.get(Model, table_id)
        # `analytics.customers.x` must not become catalog.schema.table.
        row.source_schema, row.source_table = "analytics", "customers.x"
    assert_refused(estimate(table_id), "parent_model_id", "no dots")


def test_materializing_stored_sql_that_reaches_the_store_fails_in_the_compiler() -> None:
    """The run worker compiles the audience before the activation store runs it."""
    members = f"activation.composable_activation.members_{AUDIENCE_ID.replace('-', '')}"
    for source in (
        {"sql": f"SELECT entity_key AS customer_id FROM {members}"},
        {"sql": "SELECT entity_key AS customer_id FROM composable_activation.membership_stats"},
        {"table": "activation.composable_activation.membership_stats"},
    ):
        with pytest.raises(FilterError, match=r"model customers: .*(is not allowed|no dots)"):
            everyone(**source)
    assert 'FROM "analytics"."customers" AS p' in everyone(table="analytics.customers").sql


def _warehouse(tmp_path: Path) -> str:
    url = customers_warehouse(tmp_path)
    # A secret beside the warehouse, where the catalog lives.
    (tmp_path / "catalog.sqlite").write_text("destination secrets")
    return url


# Raw SQL below the parser: what only the engine's sandbox stops.
ENGINE_ATTACKS = [
    ("SELECT * FROM read_text('/etc/hostname')", "Permission Error"),
    ("SELECT * FROM glob('/*')", "Permission Error"),
    ("SELECT * FROM read_blob('{tmp}/catalog.sqlite')", "Permission Error"),
    ("COPY (SELECT 1) TO '{tmp}/out.csv'", "Permission Error"),
    ("ATTACH '{tmp}/other.duckdb' AS other", "Permission Error"),
    ("INSTALL httpfs", "Permission Error"),
    ("LOAD sqlite", "disabled"),
    ("SET enable_external_access = true", "locked"),
    ("SET lock_configuration = false", "locked"),
    ("SET allowed_directories = ['/']", "locked"),
]


def test_the_api_warehouse_connection_is_sandboxed(tmp_path: Path) -> None:
    warehouse = Warehouse(_warehouse(tmp_path), read_only=True)
    for statement, message in ENGINE_ATTACKS:
        with pytest.raises(WarehouseRejectedError, match=message), warehouse.connect() as conn:
            conn.exec_driver_sql(statement.format(tmp=tmp_path))
    assert not (tmp_path / "out.csv").exists() and not (tmp_path / "other.duckdb").exists()
    # A second connection shares the first one's (locked) instance: it works, sandboxed.
    with warehouse.connect() as first, warehouse.connect() as second:
        assert first.exec_driver_sql("SELECT count(*) FROM analytics.customers").scalar() == 100
        assert second.exec_driver_sql("SELECT count(*) FROM analytics.customers").scalar() == 100
        with pytest.raises(sa.exc.DBAPIError, match="Permission Error"):
            second.exec_driver_sql("SELECT * FROM read_text('/etc/hostname')")


def test_the_activation_store_is_sandboxed_and_still_writes_and_spills(tmp_path: Path) -> None:
    home = tmp_path / "home"
    store = ActivationStore(warehouse_url=_warehouse(tmp_path), home=home, memory_limit="48MB")
    for statement, message in ENGINE_ATTACKS:
        with pytest.raises(WarehouseError, match=message), store.transaction() as conn:
            conn.exec_driver_sql(statement.format(tmp=tmp_path))
    # The store's own file stays readable to the engine: the parser is what refuses it.
    with pytest.raises(FilterError, match=TABLE_FUNCTION):
        parse_select(f"SELECT * FROM read_blob('{store.path}')", dialect="duckdb", field="sql")

    members = everyone(table="analytics.customers")
    change = store.replace_members(audience_id=AUDIENCE_ID, members=members.expression)
    assert change.member_count == 100
    # More than the memory limit: sorted only by spilling to $COMPOSABLE_HOME/spill.
    big = store.table("spill_probe").sql(dialect="duckdb")
    with store.transaction() as conn, store.engine.connect() as second:
        conn.exec_driver_sql(
            f"CREATE TABLE {big} AS SELECT md5(range::VARCHAR) || md5((range + 1)::VARCHAR) "
            "AS m FROM range(300000) ORDER BY m"
        )
        # DuckDB creates the directory on the first spill (and removes it with the instance).
        assert (home / "spill").is_dir()
        # Another connection of the process finds the instance locked: it attaches nothing
        # new, and reads the warehouse all the same.
        assert second.exec_driver_sql("SELECT count(*) FROM analytics.customers").scalar() == 100
    with store.transaction() as conn:
        assert conn.exec_driver_sql(f"SELECT count(*) FROM {big}").scalar() == 300000


def test_another_workspace_reads_neither_activation_rows_nor_the_catalog(
    client: TestClient, tenant: Tenant, other_tenant: Tenant, settings: Settings
) -> None:
    # The first workspace's audience has members in the activation store.
    store = ActivationStore(warehouse_url=settings.resolved_warehouse_url, home=settings.home_dir)
    members = everyone(table="analytics.customers")
    store.replace_members(audience_id=AUDIENCE_ID, members=members.expression)
    members_table = store.members_table(AUDIENCE_ID).sql(dialect="duckdb")
    store.engine.dispose()

    customers = client.post(
        other_tenant.url("/models"),
        json={"name": "customers", "source_schema": "analytics", "source_table": "customers",
              "primary_key_column": "customer_id"},
        headers=other_tenant.headers,
    ).json()["id"]  # fmt: skip
    home = settings.home_dir
    for sql in [
        f"SELECT * FROM {members_table}",
        f"SELECT * FROM composable_activation.{store.members_table(AUDIENCE_ID).name}",
        f"SELECT content FROM read_blob('{home}/activation.duckdb')",
        f"SELECT content FROM read_blob('{home}/catalog.sqlite')",
        f"SELECT * FROM sqlite_scan('{home}/catalog.sqlite', 'api_keys')",
        f"SELECT * FROM '{home}/catalog.sqlite'",
        f"SELECT content FROM read_text('{home}/secret.key')",
    ]:
        assert_refused(preview(client, other_tenant, sql), "sql_query", "is not allowed")
        trait = {"name": "Stolen", "slug": "stolen", "parent_model_id": customers,
                 "trait_type": "sql", "result_type": "string", "config": {"sql": sql}}  # fmt: skip
        refused = client.post(other_tenant.url("/traits"), json=trait, headers=other_tenant.headers)
        assert_refused(refused, "config.sql", "is not allowed")
    # What the second workspace may read: the warehouse.
    assert preview_rows(client, other_tenant, "SELECT count(*) AS n FROM analytics.customers") == [
        {"n": 3}
    ]  # fmt: skip


# -- PostgreSQL warehouses --------------------------------------------------------------


@pytest.fixture
def pg_client(pg_url: str, tmp_path: Path) -> Iterator[tuple[TestClient, Tenant, sa.Engine]]:
    """The API over a PostgreSQL warehouse holding the activation store's schema too, with
    a 0.5 s statement timeout; and an engine of the warehouse's owner to check its rows."""
    owner = sa.create_engine(pg_url)
    with owner.begin() as conn:
        for statement in (
            "CREATE SCHEMA analytics",
            "CREATE TABLE analytics.customers AS SELECT 'C' || i AS customer_id, i AS score "
            "FROM generate_series(1, 3) i",
            "CREATE TABLE analytics.visits (customer_id TEXT)",
            # A function that writes: callable by name, so only the session can refuse it.
            "CREATE FUNCTION analytics.record_visit() RETURNS integer LANGUAGE sql AS "
            "$$ INSERT INTO analytics.visits VALUES ('x'); SELECT 1 $$",
            "CREATE SCHEMA composable_activation",
            "CREATE TABLE composable_activation.members_x AS SELECT 'secret' AS entity_key",
        ):
            conn.exec_driver_sql(statement)
    settings = Settings(
        home=tmp_path / "home",
        catalog_url=f"sqlite:///{tmp_path / 'catalog.sqlite'}",
        warehouse_url=pg_url,
        dagster_url=f"http://127.0.0.1:{free_port()}/graphql",
        warehouse_hold_seconds=0,
        sql_timeout_seconds=0.5,
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client, make_tenant(settings, "Acme"), owner
    owner.dispose()
    # The API's engine is cached per URL and timeout: close its connections before the DROP.
    Warehouse(pg_url, sql_timeout_seconds=settings.sql_timeout_seconds).engine.dispose()


def test_postgres_parser_rules(pg_client: tuple[TestClient, Tenant, sa.Engine]) -> None:
    client, tenant, owner = pg_client
    database = owner.url.database
    for sql, reason in [
        ("SELECT pg_read_file('/etc/passwd') AS f", SYSTEM_FUNCTION),
        ("SELECT pg_read_binary_file('/etc/passwd') AS f", SYSTEM_FUNCTION),
        ("SELECT pg_catalog.pg_read_file('/etc/passwd') AS f", "reserved"),
        ("SELECT lo_import('/etc/passwd') AS o", SYSTEM_FUNCTION),
        ("SELECT * FROM pg_ls_dir('.') AS f", TABLE_FUNCTION),
        ("SELECT * FROM ROWS FROM (pg_ls_dir('.')) AS f", TABLE_FUNCTION),
        ("SELECT * FROM dblink('dbname=postgres', 'SELECT 1') AS t(a int)", TABLE_FUNCTION),
        ("SELECT dblink_exec('dbname=postgres', 'DROP TABLE x') AS d", SYSTEM_FUNCTION),
        ("SELECT set_config('statement_timeout', '0', false) AS s", SYSTEM_FUNCTION),
        ("SELECT current_setting('data_directory') AS s", SYSTEM_FUNCTION),
        ("SELECT query_to_xml('SELECT * FROM composable_activation.members_x', true, true, '')",
         SYSTEM_FUNCTION),
        ("SELECT pg_sleep(10) AS s", SYSTEM_FUNCTION),
        ("SELECT pg_sleep_for('10 seconds') AS s", SYSTEM_FUNCTION),
        # libxml2 on XPath the query makes up: `xpath('///', ...)` was an internal error, 502.
        ("SELECT xpath('///', '<a/>'::xml) AS x", SYSTEM_FUNCTION),
        ("SELECT xpath_exists('/a', '<a/>'::xml) AS x", SYSTEM_FUNCTION),
        ("SELECT xmlelement(name a) AS x", SYSTEM_FUNCTION),
        ("SELECT xml_is_well_formed('<a/>') AS x", SYSTEM_FUNCTION),
        ("SELECT * FROM xmltable('/a' PASSING '<a/>' COLUMNS x int) AS t", TABLE_FUNCTION),
        ("SELECT pg_terminate_backend(1) AS t", SYSTEM_FUNCTION),
        ("SELECT nextval('analytics.seq') AS n", SYSTEM_FUNCTION),
        ("SELECT * FROM composable_activation.members_x", "reserved"),
        ("SELECT query FROM pg_stat_activity", "system catalogs"),
        ("SELECT * FROM pg_settings", "system catalogs"),
        ("SELECT * FROM information_schema.tables", "reserved"),
        (f"SELECT * FROM {database}.analytics.customers", "another database"),
        ("SELECT * INTO analytics.copy FROM analytics.customers", "INTO is not allowed"),
        ("WITH d AS (DELETE FROM analytics.customers RETURNING *) SELECT * FROM d",
         "DELETE is not allowed"),
        ("SELECT * FROM analytics.customers FOR UPDATE", "LOCK is not allowed"),
    ]:  # fmt: skip
        assert_refused(preview(client, tenant, sql), "sql_query", reason)
    rows = preview_rows(
        client,
        tenant,
        "SELECT c.customer_id, g.n, j.key FROM analytics.customers c "
        "JOIN generate_series(1, 2) AS g(n) ON g.n = c.score "
        "CROSS JOIN jsonb_each('{\"k\": 1}'::jsonb) AS j WHERE c.customer_id LIKE 'C%' "
        "ORDER BY 1",
    )
    assert rows == [{"customer_id": "C1", "n": 1, "key": "k"},
                    {"customer_id": "C2", "n": 2, "key": "k"}]  # fmt: skip
    with owner.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM analytics.customers").scalar() == 3


def test_postgres_preview_cannot_write(pg_client: tuple[TestClient, Tenant, sa.Engine]) -> None:
    client, tenant, owner = pg_client
    written = preview(client, tenant, "SELECT analytics.record_visit() AS r")
    assert_refused(written, "sql_query", "read-only transaction")
    with owner.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM analytics.visits").scalar() == 0
    assert preview_rows(client, tenant, "SELECT 1 AS n FROM analytics.customers LIMIT 1") == [
        {"n": 1}
    ]  # fmt: skip


def test_postgres_slow_query_hits_the_statement_timeout(
    pg_client: tuple[TestClient, Tenant, sa.Engine],
) -> None:
    client, tenant, _ = pg_client
    started = time.monotonic()
    slow = preview(client, tenant, "SELECT count(*) AS n FROM generate_series(1, 1000000000)")
    assert_refused(slow, "sql_query", "took longer than 0.5 s and was cancelled")
    assert time.monotonic() - started < 10
    assert preview_rows(client, tenant, "SELECT count(*) AS n FROM generate_series(1, 10)") == [
        {"n": 10}
    ]  # fmt: skip


def test_postgres_warehouse_errors_are_400_naming_the_field(
    pg_client: tuple[TestClient, Tenant, sa.Engine],
) -> None:
    client, tenant, owner = pg_client
    for sql, message in [
        ("SELECT * FROM analytics.missing", 'relation "analytics.missing" does not exist'),
        ("SELECT 'x'::integer AS n", "invalid input syntax for type integer"),
        ("SELECT 1e400::float8 AS f", "out of range"),
        ("SELECT 1 / 0 AS n", "division by zero"),
    ]:
        assert_refused(preview(client, tenant, sql), "sql_query", message)
    # The driver cannot send a lone surrogate (the API's JSON parser refuses one earlier).
    warehouse = Warehouse(owner.url.render_as_string(hide_password=False))
    with pytest.raises(WarehouseRejectedError, match="query: text that cannot be encoded"):
        warehouse.fetch("SELECT '\ud800' AS s")
    assert preview_rows(client, tenant, "SELECT 1e400 AS n")[0]["n"].startswith("1" + "0" * 20)


def test_postgres_values_nested_too_deeply_to_decode_are_400(
    pg_client: tuple[TestClient, Tenant, sa.Engine],
) -> None:
    # psycopg's JSON decoding recursed out of the stack: a 500.
    client, tenant, _ = pg_client
    deep = preview(client, tenant, "SELECT (repeat('[', 5000) || repeat(']', 5000))::jsonb AS j")
    assert_refused(deep, "sql_query", "a value nested too deeply to read")
    rows = preview_rows(client, tenant, "SELECT (repeat('[', 3) || repeat(']', 3))::jsonb AS j")
    assert rows == [{"j": [[[]]]}]


def test_postgres_explain_has_one_deadline_for_all_its_queries(
    pg_client: tuple[TestClient, Tenant, sa.Engine],
) -> None:
    """Each of explain's counts had the whole statement_timeout: the queries of a request
    now share it (0.5 s here), whatever their number."""
    client, tenant, _ = pg_client
    sql = ("SELECT customer_id, score FROM analytics.customers "
           "WHERE (SELECT count(*) FROM generate_series(1, 1000000)) > 0")  # fmt: skip
    slow = {"name": "slow", "primary_key_column": "customer_id", "sql_query": sql}
    model = client.post(tenant.url("/models"), json=slow, headers=tenant.headers).json()
    condition = {"type": "condition", "condition_type": "property", "column": "score",
                 "operator": "greater_than", "value": 0}  # fmt: skip
    audience = client.post(
        tenant.url("/audiences"),
        json={"name": "slow", "parent_model_id": model["id"],
              "filter_tree": {"type": "and", "children": [condition] * 6}},
        headers=tenant.headers,
    ).json()  # fmt: skip
    started = time.monotonic()
    explained = client.post(
        tenant.url(f"/audiences/{audience['id']}/explain"), headers=tenant.headers
    )
    assert_refused(explained, "filter_tree", "took longer than 0.5 s and was cancelled")
    assert time.monotonic() - started < 5
    quick = client.post(
        tenant.url(f"/models/{model['id']}/estimate-filter"),
        json={"filter_tree": {"type": "and", "children": [condition]}},
        headers=tenant.headers,
    )
    assert quick.status_code == 200 and quick.json()["estimated_size"] == 3


def test_a_slow_duckdb_query_is_interrupted_at_the_timeout(
    settings: Settings, tenant: Tenant
) -> None:
    # DuckDB has no statement_timeout: the API interrupts the connection from a timer.
    quick = settings.model_copy(update={"sql_timeout_seconds": 0.5})
    with TestClient(create_app(quick), raise_server_exceptions=False) as client:
        started = time.monotonic()
        slow = preview(client, tenant, "SELECT count(*) AS n FROM range(10000000000000) r")
        assert_refused(slow, "sql_query", "took longer than 0.5 s and was cancelled")
        assert time.monotonic() - started < 10
        # The same server answers the next query as usual.
        assert preview_rows(client, tenant, "SELECT count(*) AS n FROM range(10) r") == [
            {"n": 10}
        ]  # fmt: skip
