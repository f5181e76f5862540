"""The activation store on DuckDB (own file, serialized writers) and on PostgreSQL (a schema
in the warehouse)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import duckdb
import pytest
import sqlalchemy as sa
import sqlglot
from sqlglot import exp

from composable_dagster.catalog.db import catalog_session, upgrade_catalog
from composable_dagster.catalog.tables import Audience, Model
from composable_dagster.catalog.workspaces import create_workspace
from composable_dagster.defs.audiences import (
    AudienceAssetSpec,
    build_audience_assets,
    membership_checks,
)
from composable_dagster.defs.resources import ActivationStoreResource, CatalogResource
from composable_dagster.errors import WarehouseError
from composable_dagster.filters import compile_members
from composable_dagster.filters.schema import (
    CatalogSchema,
    Column,
    ColumnType,
    EntityType,
    ModelDef,
)
from composable_dagster.names import TAG_OVERRIDE_SAFETY
from composable_dagster.warehouse.activation import (
    ActivationStore,
    MembershipChange,
    MembershipStats,
)
from composable_dagster.warehouse.connection import scrub_engine_text

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


def customers_warehouse(directory: Path, *, rows: int = 100) -> str:
    """The URL of a DuckDB warehouse in `directory` with `rows` customers C0, C1 ... scored
    0..99 (repeating)."""
    warehouse = directory / "warehouse.duckdb"
    with duckdb.connect(str(warehouse)) as con:
        con.execute("CREATE SCHEMA analytics")
        con.execute("CREATE TABLE analytics.customers AS SELECT 'C' || i AS customer_id, "
                    f"i % 100 AS score FROM range({rows}) t(i)")  # fmt: skip
    return f"duckdb:///{warehouse}"


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
    store = ActivationStore(warehouse_url=customers_warehouse(tmp_path), home=tmp_path / "home")
    _exercise(store)
    assert (tmp_path / "home" / "activation.duckdb").is_file()
    with pytest.raises(WarehouseError, match="read-only"), store.transaction() as conn:
        conn.exec_driver_sql("DELETE FROM analytics.customers")


def postgres_customers(engine: sa.Engine) -> None:
    """The customers of `customers_warehouse` in a PostgreSQL warehouse."""
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE SCHEMA analytics")
        conn.exec_driver_sql("CREATE TABLE analytics.customers AS SELECT 'C' || i AS "
                             "customer_id, i AS score FROM generate_series(0, 99) i")  # fmt: skip


def test_postgres_store_is_a_schema_in_the_warehouse(pg_url: str, tmp_path: Path) -> None:
    engine = sa.create_engine(pg_url)
    postgres_customers(engine)
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
    warehouse = customers_warehouse(tmp_path, rows=2_000_000)
    writer = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from tests.defs.test_activation import _members
        from composable_dagster.warehouse.activation import ActivationStore
        store = ActivationStore(warehouse_url="{warehouse}", home=Path("{tmp_path}"))
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


def _slow_members(work: str) -> exp.Select:
    """Every customer, after a long computation (what a slow model's SQL amounts to)."""
    select = sqlglot.parse_one(
        f"SELECT p.customer_id AS entity_key FROM analytics.customers AS p WHERE ({work}) > 0",
        read="duckdb",
    )
    assert isinstance(select, exp.Select)
    return select


RUN_TIMEOUT = (
    "a statement of the run took longer than 0.5 s and was cancelled "
    "(COMPOSABLE_RUN_SQL_TIMEOUT_SECONDS)"
)


def test_duckdb_run_statements_stop_at_the_run_timeout_and_free_the_lock(tmp_path: Path) -> None:
    """Globex's trivial materialization waited 22.8 s behind Acme's slow model, whose SQL
    ran under the writer lock with no deadline."""
    store = ActivationStore(
        warehouse_url=customers_warehouse(tmp_path),
        home=tmp_path / "home",
        run_sql_timeout_seconds=0.5,
    )
    failures: list[str] = []

    def acme() -> None:
        slow = _slow_members("SELECT sum(range % 7) FROM range(5000000000)")  # ~20 s
        try:
            store.replace_members(audience_id="acme", members=slow)
        except WarehouseError as err:
            failures.append(str(err))

    thread = threading.Thread(target=acme)
    thread.start()
    time.sleep(0.3)  # Acme takes the lock first
    started = time.monotonic()
    change = store.replace_members(audience_id="globex", members=_members("duckdb", 49))
    waited = time.monotonic() - started
    thread.join(timeout=60)
    assert failures == [RUN_TIMEOUT]
    assert change.member_count == 50 and waited < 5
    assert store.member_count("acme") is None


def test_postgres_run_statements_stop_at_the_run_timeout(pg_url: str, tmp_path: Path) -> None:
    engine = sa.create_engine(pg_url)
    postgres_customers(engine)
    engine.dispose()
    store = ActivationStore(warehouse_url=pg_url, home=tmp_path, run_sql_timeout_seconds=0.5)
    slow = _slow_members("SELECT count(*) FROM generate_series(1, 200000000)")  # ~45 s
    started = time.monotonic()
    with pytest.raises(WarehouseError) as info:
        store.replace_members(audience_id="acme", members=slow)
    assert str(info.value) == RUN_TIMEOUT and time.monotonic() - started < 10
    assert store.replace_members(audience_id="globex", members=_members("postgres", 49)) == (
        MembershipChange(member_count=50, previous_count=None, added=None, removed=None)
    )
    store.engine.dispose()


@dataclass(frozen=True)
class CatalogAudience:
    """An audience in a real catalog (SQLite file) and its asset: a run reads the tree from
    the catalog, as in production."""

    spec: AudienceAssetSpec
    catalog: CatalogResource

    def materialize(
        self, *, warehouse_url: str, home: Path, tags: dict[str, str] | None = None
    ) -> dg.ExecuteInProcessResult:
        return dg.materialize(
            [build_audience_assets([self.spec], name="acme__audiences")],
            resources={
                "activation": ActivationStoreResource(home=str(home), warehouse_url=warehouse_url),
                "catalog": self.catalog,
            },
            tags=tags,
            raise_on_error=False,
        )


def catalog_audience(
    tmp_path: Path, *, name: str, source_table: str, columns: list[dict], tree: dict
) -> CatalogAudience:
    """A workspace "Acme" with a parent model over analytics.<source_table> keyed by
    customer_id, and an audience `name` of it with `tree` (at most 50% may leave a run)."""
    catalog_url = f"sqlite:///{tmp_path / 'catalog.sqlite'}"
    upgrade_catalog(catalog_url)
    with catalog_session(catalog_url) as session:
        workspace = create_workspace(session, name="Acme")
        model = Model(
            workspace_id=workspace.id, name=name, model_type="table", status="ready",
            source_schema="analytics", source_table=source_table, entity_type="parent",
            primary_key_column="customer_id", columns=columns,
        )  # fmt: skip
        session.add(model)
        session.flush()
        audience = Audience(
            workspace_id=workspace.id, parent_model_id=model.id, name=name, slug=name,
            status="ready", filter_tree=tree,
        )  # fmt: skip
        session.add(audience)
        session.flush()
        audience_id = audience.id
    spec = AudienceAssetSpec(
        key=dg.AssetKey(["acme", name]), audience_id=audience_id, name=name,
        description="", group_name="acme", deps=[], kind="duckdb", max_member_drop=0.5,
    )  # fmt: skip
    catalog = CatalogResource(
        catalog_url=catalog_url,
        secret_key_file=str(tmp_path / "secret.key"),
        export_root=str(tmp_path / "exports"),
    )
    return CatalogAudience(spec=spec, catalog=catalog)


def test_a_failed_materialization_names_no_part_of_the_activation_store(tmp_path: Path) -> None:
    """DuckDB suggested `Did you mean "activation.composable_activation.members_<id>"?` for a
    misspelled table: the run's error (which the API shows) named other audiences' tables."""
    url, home = customers_warehouse(tmp_path), tmp_path / "home"
    ActivationStore(warehouse_url=url, home=home).replace_members(
        audience_id="a-1", members=_members("duckdb", 49)
    )  # the table members_a1, which the misspelled name below is near
    typo = catalog_audience(
        tmp_path, name="typo", source_table="members_a1",
        columns=[{"name": "customer_id", "type": "VARCHAR", "kind": "text"}],
        tree={"type": "and", "children": []},
    )  # fmt: skip
    result = typo.materialize(warehouse_url=url, home=home)
    failure = next(e for e in result.all_events if e.is_step_failure)
    error = failure.step_failure_data.error
    assert "typo: Catalog Error: Table with name members_a1 does not exist!" in error.message
    assert "activation." not in error.message
    # Nor do its causes, which Dagster stores with the run.
    assert "composable_activation" not in error.to_string()


CUSTOMER_COLUMNS = [
    {"name": "customer_id", "type": "VARCHAR", "kind": "text"},
    {"name": "score", "type": "INTEGER", "kind": "number"},
]
EVERYONE = {"type": "and", "children": []}


def _checks(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    return {c.check_name: c for c in result.get_asset_check_evaluations()}


def _duckdb_warehouse(tmp_path: Path) -> tuple[str, Callable[[str], None]]:
    url = customers_warehouse(tmp_path)
    path = url.removeprefix("duckdb:///")

    def execute(sql: str) -> None:
        with duckdb.connect(path) as con:
            con.execute(sql)

    return url, execute


def _postgres_warehouse(pg_url: str) -> tuple[str, Callable[[str], None]]:
    engine = sa.create_engine(pg_url, poolclass=sa.pool.NullPool)
    postgres_customers(engine)

    def execute(sql: str) -> None:
        with engine.begin() as conn:
            conn.exec_driver_sql(sql)

    return pg_url, execute


@pytest.mark.parametrize("engine", ["duckdb", "postgres"])
def test_the_member_drop_check_holds_until_the_membership_recovers_or_an_override(
    engine: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The drop is measured from the last membership that passed its checks: a collapse
    stored by a failed run does not become the next run's base (it did: the second trigger
    of a collapsed audience passed and its mirror removed 60% of the destination)."""
    url, execute = (
        _duckdb_warehouse(tmp_path)
        if engine == "duckdb"
        else _postgres_warehouse(request.getfixturevalue("pg_url"))
    )
    home = tmp_path / "home"
    audience = catalog_audience(
        tmp_path, name="everyone", source_table="customers", columns=CUSTOMER_COLUMNS,
        tree=EVERYONE,
    )  # fmt: skip

    def materialize(tags: dict[str, str] | None = None) -> dict[str, dg.AssetCheckEvaluation]:
        return _checks(audience.materialize(warehouse_url=url, home=home, tags=tags))

    assert all(c.passed for c in materialize().values())  # 100 members: the base
    execute("DELETE FROM analytics.customers WHERE score >= 40")  # 60% leave
    for attempt in ("collapse", "the same collapse again"):
        checks = materialize()
        drop = checks["member_count_drop"]
        assert drop.passed is False, attempt
        assert drop.metadata["base_member_count"].value == 100, attempt
        assert drop.description.startswith("the member count fell 60.0% (from 100 to 40)")
        assert checks["not_empty"].passed is True
    assert drop.metadata["previous_member_count"].value == 40  # what the old check used

    # A person looked and lets it through: both checks pass, saying what they saw.
    checks = materialize({TAG_OVERRIDE_SAFETY: "true"})
    assert all(c.passed for c in checks.values())
    assert checks["member_count_drop"].description == (
        f"overridden ({TAG_OVERRIDE_SAFETY}=true): the member count went from 100 to 40, "
        "a drop of 60.0% (50% allowed)"
    )
    assert checks["member_count_drop"].metadata["overridden"].value is True

    # The override moved the base to 40: 40 -> 25 is a 37.5% drop (from 100 it would be 75%).
    execute("DELETE FROM analytics.customers WHERE score >= 25")
    checks = materialize()
    assert all(c.passed for c in checks.values()), checks
    assert checks["member_count_drop"].metadata["base_member_count"].value == 40
    assert checks["member_count_drop"].description is None
    assert (
        ActivationStore(warehouse_url=url, home=home).member_count(audience.spec.audience_id) == 25
    )


def _change(count: int, *, previous: int | None, base: int | None) -> MembershipChange:
    return MembershipChange(count, previous, None, None, base_count=base)


@pytest.mark.parametrize(
    ("change", "overridden", "not_empty", "no_drop"),
    [
        (_change(100, previous=None, base=None), False, True, True),  # first materialization
        (_change(0, previous=None, base=None), False, False, True),
        (_change(40, previous=100, base=None), False, True, False),  # a store with no base
        (_change(60, previous=100, base=None), False, True, True),
        (_change(40, previous=40, base=100), False, True, False),  # the base, not previous
        (_change(60, previous=40, base=100), False, True, True),
        (_change(100, previous=100, base=200), False, True, True),  # exactly 50%: allowed
        (_change(99, previous=200, base=200), False, True, False),
        (_change(300, previous=100, base=100), False, True, True),  # growth
        (_change(5, previous=0, base=0), False, True, True),  # from an empty one: no drop
        (_change(0, previous=100, base=100), False, False, False),
        (_change(0, previous=100, base=100), True, True, True),  # overridden
        (_change(40, previous=40, base=100), True, True, True),
    ],
)
def test_membership_checks(
    change: MembershipChange, overridden: bool, not_empty: bool, no_drop: bool
) -> None:
    results = membership_checks(
        change, asset_key=dg.AssetKey("a"), max_member_drop=0.5, overridden=overridden
    )
    assert [r.passed for r in results] == [not_empty, no_drop]
    assert all((r.description is None) == r.passed for r in results if not overridden)
    assert all(r.description.startswith("overridden (") for r in results if overridden)


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ('Catalog Error: Table with name members_abd does not exist!\n'
         'Did you mean "activation.composable_activation.members_abc"?\n\nLINE 1: FROM members_abd',
         "Catalog Error: Table with name members_abd does not exist!\n\nLINE 1: FROM members_abd"),
        ('Binder Error: Referenced column "scor" not found!\nCandidate bindings: "score"\n'
         "LINE 1: SELECT scor FROM analytics.c, activation.composable_activation.members_x",
         'Binder Error: Referenced column "scor" not found!\nCandidate bindings: "score"\n'
         "LINE 1: SELECT scor FROM analytics.c, <reserved>"),
        ('Catalog Error: Table with name "composable_activation.m" does not exist because '
         'schema "composable_activation" does not exist.',
         "Catalog Error: Table with name <reserved> does not exist because schema <reserved> "
         "does not exist."),
        ('relation "x" does not exist\n'
         'HINT:  Perhaps you meant to reference the table "composable_activation.members_x".',
         'relation "x" does not exist'),
        # Suggestions of warehouse tables stay: they are the workspace's to read.
        ('Catalog Error: Table with name customer does not exist!\n'
         'Did you mean "analytics.customers"?',
         'Catalog Error: Table with name customer does not exist!\n'
         'Did you mean "analytics.customers"?'),
    ],
)  # fmt: skip
def test_engine_messages_lose_what_names_the_activation_store(text: str, shown: str) -> None:
    assert scrub_engine_text(text) == shown
