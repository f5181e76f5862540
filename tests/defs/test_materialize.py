"""Materializing audience and sync assets on the demo warehouse, and the checks that guard
syncs; Dagster run/event storage in PostgreSQL."""

from __future__ import annotations

import os
from datetime import UTC, datetime

import dagster as dg
import duckdb
import pytest
import sqlalchemy as sa

from composable_dagster.catalog import audiences
from composable_dagster.catalog.db import catalog_session
from composable_dagster.catalog.schema_view import load_schema
from composable_dagster.catalog.tables import Sync
from composable_dagster.defs.load import build_definitions
from composable_dagster.filters import compile_members
from composable_dagster.settings import Settings
from composable_dagster.spec.sync import MappedField
from composable_dagster.sync.plan import membership_row_hash
from composable_dagster.warehouse.activation import ActivationStore

from ..conftest import DemoEnv


@pytest.fixture
def demo_settings(demo_env: DemoEnv, monkeypatch: pytest.MonkeyPatch) -> Settings:
    for key in list(os.environ):
        if key.startswith("COMPOSABLE_WAREHOUSE") or key == "COMPOSABLE_DBT_TARGET":
            monkeypatch.delenv(key)
    return Settings(home=demo_env.cwd / ".composable")


def _ltv_tree(threshold: float) -> dict:
    return {"type": "and", "children": [
        {"type": "condition", "condition_type": "property", "column": "lifetime_value",
         "operator": "greater_than", "value": threshold}]}  # fmt: skip


def _create(settings: Settings, demo_env: DemoEnv, name: str, tree: dict) -> tuple[str, str]:
    """An audience and an active sync of it in the demo workspace; their ids."""
    out = demo_env.init_output
    with catalog_session(settings.resolved_catalog_url) as session:
        audience = audiences.create_audience(
            session, workspace_id=out["workspace_id"], created_by=None,
            spec=audiences.AudienceCreate(
                name=name, parent_model_id=out["model_ids"]["customers"], filter_tree=tree),
        )  # fmt: skip
        sync = Sync(workspace_id=out["workspace_id"], audience_id=audience.id,
                    destination_id=out["destination_id"], name=f"{name} sync",
                    slug=audience.slug + "_sync", sync_mode="mirror", status="active",
                    status_error="",
                    field_mapping=[{"source_column": "email",
                                    "destination_field": "email"}])  # fmt: skip
        session.add(sync)
        session.flush()
        return audience.id, sync.id


def _set_tree(settings: Settings, demo_env: DemoEnv, audience_id: str, tree: dict) -> None:
    with catalog_session(settings.resolved_catalog_url) as session:
        audiences.update_audience(
            session, workspace_id=demo_env.init_output["workspace_id"],
            audience_id=audience_id, spec=audiences.AudienceUpdate(filter_tree=tree),
        )  # fmt: skip


def _materialize(
    defs: dg.Definitions, keys: list[dg.AssetKey], **kwargs
) -> dg.ExecuteInProcessResult:
    # The audiences (and syncs) of a workspace are one multi-asset: select only these.
    assets = list({id(a): a for a in (defs.get_assets_def(k) for k in keys)}.values())
    return dg.materialize(assets, resources=defs.resources, selection=keys, **kwargs)


def test_audience_asset_holds_exactly_the_compiled_members(
    demo_settings: Settings, demo_env: DemoEnv
) -> None:
    audience_id, _ = _create(demo_settings, demo_env, "Exact members", _ltv_tree(500))
    defs = build_definitions(demo_settings)
    key = dg.AssetKey(["demo", "audiences", "exact_members"])
    result = _materialize(defs, [key])
    assert result.success
    [event] = [e for e in result.get_asset_materialization_events() if e.asset_key == key]
    metadata = event.materialization.metadata

    with catalog_session(demo_settings.resolved_catalog_url) as session:
        schema = load_schema(session, workspace_id=demo_env.init_output["workspace_id"])
    compiled = compile_members(
        _ltv_tree(500), parent_model_id=demo_env.init_output["model_ids"]["customers"],
        schema=schema, now=datetime.now(UTC),
    )  # fmt: skip
    warehouse = demo_settings.resolved_warehouse_url.removeprefix("duckdb:///")
    with duckdb.connect(warehouse, read_only=True) as con:
        expected = {row[0] for row in con.execute(compiled.sql).fetchall()}
        everyone = con.execute("SELECT count(*) FROM analytics.customers").fetchone()[0]
    store = ActivationStore(
        warehouse_url=demo_settings.resolved_warehouse_url, home=demo_settings.home_dir
    )
    assert 0 < len(expected) < everyone
    assert store.member_keys(audience_id) == expected
    # Its sync's row hash is stored with the membership, so the sync's diff reads no
    # parent row; a mapping no sync of it has is not.
    stored = membership_row_hash(
        [MappedField("email", "email", column="email")], dialect=store.dialect
    )
    other = membership_row_hash(
        [MappedField("country", "country", column="country")], dialect=store.dialect
    )
    assert stored is not None and other is not None
    with store.transaction() as conn:
        members = store.members_table(audience_id)
        assert store.exists(conn, members, column=stored.name)
        assert not store.exists(conn, members, column=other.name)
    assert metadata["member_count"].value == len(expected)
    assert metadata["rows_without_key"].value == 0
    assert "```sql" in metadata["compiled_sql"].value
    assert metadata["duration_seconds"].value > 0


def test_blocking_checks_stop_the_sync_on_a_collapse(
    demo_settings: Settings, demo_env: DemoEnv
) -> None:
    audience_id, sync_id = _create(demo_settings, demo_env, "Collapsing", _ltv_tree(100))
    audience_key = dg.AssetKey(["demo", "audiences", "collapsing"])
    sync_key = dg.AssetKey(["demo", "syncs", "collapsing_sync"])

    first = _materialize(build_definitions(demo_settings), [audience_key, sync_key])
    assert first.success
    synced = {e.asset_key for e in first.get_asset_materialization_events()}
    assert synced == {audience_key, sync_key}
    store = ActivationStore(
        warehouse_url=demo_settings.resolved_warehouse_url, home=demo_settings.home_dir
    )
    before = store.member_count(audience_id)

    # Keep only the top few percent: a fall far beyond the 50% allowed.
    _set_tree(demo_settings, demo_env, audience_id, _ltv_tree(3000))
    second = _materialize(
        build_definitions(demo_settings), [audience_key, sync_key], raise_on_error=False
    )
    checks = {c.check_name: c for c in second.get_asset_check_evaluations()}
    assert checks["member_count_drop"].passed is False
    assert checks["member_count_drop"].metadata["previous_member_count"].value == before
    # In words, for the run's `error` and the sync's `status_error` (api/runs.py).
    assert checks["member_count_drop"].description.startswith("the member count fell ")
    assert f"from {before} to " in checks["member_count_drop"].description
    assert checks["not_empty"].passed is True
    # The sync did not run on the collapsed audience.
    assert {e.asset_key for e in second.get_asset_materialization_events()} == {audience_key}
    assert sync_id  # the sync row exists; only its run was stopped


def test_run_and_events_stored_in_postgres(
    demo_settings: Settings, demo_env: DemoEnv, pg_url: str
) -> None:
    _create(demo_settings, demo_env, "Stored in postgres", _ltv_tree(800))
    key = dg.AssetKey(["demo", "audiences", "stored_in_postgres"])
    psycopg2_url = (
        sa.make_url(pg_url)
        .set(drivername="postgresql+psycopg2")
        .render_as_string(hide_password=False)
    )
    overrides = {"storage": {"postgres": {"postgres_url": psycopg2_url}}}
    with dg.instance_for_test(overrides=overrides) as instance:
        result = _materialize(build_definitions(demo_settings), [key], instance=instance)
        assert result.success
        record = instance.get_latest_materialization_event(key)
        assert record is not None and record.run_id == result.run_id
        assert instance.get_run_by_id(result.run_id).is_success
    engine = sa.create_engine(pg_url)
    with engine.connect() as conn:
        run_ids = {r[0] for r in conn.execute(sa.text("SELECT run_id FROM runs"))}
        events = conn.execute(
            sa.text("SELECT count(*) FROM event_logs WHERE run_id = :r"), {"r": result.run_id}
        ).scalar_one()
    engine.dispose()
    assert result.run_id in run_ids and events > 5


def test_one_collapsed_audience_stops_the_syncs_of_its_run_not_the_other_audiences(
    demo_settings: Settings, demo_env: DemoEnv
) -> None:
    """A workspace's audiences are one multi-asset, so are its syncs: a run of several
    materializes every selected audience, and a failed blocking check stops the syncs step
    of that run (a run from the API or a schedule holds one sync; this is a UI bulk run)."""
    steady_id, _ = _create(demo_settings, demo_env, "Steady", _ltv_tree(200))
    falling_id, _ = _create(demo_settings, demo_env, "Falling", _ltv_tree(100))
    keys = [
        dg.AssetKey(["demo", "audiences", "steady"]),
        dg.AssetKey(["demo", "syncs", "steady_sync"]),
        dg.AssetKey(["demo", "audiences", "falling"]),
        dg.AssetKey(["demo", "syncs", "falling_sync"]),
    ]
    first = _materialize(build_definitions(demo_settings), keys)
    assert {e.asset_key for e in first.get_asset_materialization_events()} == set(keys)

    _set_tree(demo_settings, demo_env, falling_id, _ltv_tree(3000))  # most members leave
    second = _materialize(build_definitions(demo_settings), keys, raise_on_error=False)
    checks = {
        (c.asset_key.path[-1], c.check_name): c.passed for c in second.get_asset_check_evaluations()
    }
    assert checks[("falling", "member_count_drop")] is False
    assert checks[("steady", "member_count_drop")] is True
    # Both audiences were computed; no sync of this run was sent.
    materialized = {e.asset_key for e in second.get_asset_materialization_events()}
    assert materialized == {keys[0], keys[2]}
    store = ActivationStore(
        warehouse_url=demo_settings.resolved_warehouse_url, home=demo_settings.home_dir
    )
    assert store.member_count(steady_id) > store.member_count(falling_id) > 0
