"""Definitions from a catalog with several workspaces: keys, deps, groups, kinds, schedules."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import duckdb
import pytest

from composable_dagster.catalog import audiences, models, relationships, workspaces
from composable_dagster.catalog.db import catalog_session, upgrade_catalog
from composable_dagster.catalog.export import CatalogRows, catalog_rows
from composable_dagster.catalog.graph import graph_from_rows
from composable_dagster.catalog.tables import Destination, Sync
from composable_dagster.defs.catalog_assets import catalog_definitions
from composable_dagster.defs.resources import ActivationStoreResource, CatalogResource
from composable_dagster.names import ASSET_JOB
from composable_dagster.warehouse import Warehouse

from ..api.conftest import WAREHOUSE_SQL

# Never used to materialize here: loading definitions needs the resource present.
ACTIVATION = ActivationStoreResource(home="/nonexistent", warehouse_url="duckdb:///:memory:")
CATALOG = CatalogResource(
    catalog_url="sqlite:////nonexistent/catalog.sqlite",
    secret_key_file="/nonexistent/secret.key",
    export_root="/nonexistent/exports",
)
DEPENDENCIES = {
    "activation": ACTIVATION,
    "catalog": CATALOG,
}
TABLE_ASSETS = {
    ("analytics", "customers"): dg.AssetKey("customers"),
    ("analytics", "orders"): dg.AssetKey("orders"),
    ("analytics", "events"): dg.AssetKey("events"),
}


def _property(column: str, operator: str, value: object) -> dict:
    return {"type": "condition", "condition_type": "property", "column": column,
            "operator": operator, "value": value}  # fmt: skip


@pytest.fixture
def rows(tmp_path: Path) -> CatalogRows:
    warehouse_path = tmp_path / "wh.duckdb"
    con = duckdb.connect(str(warehouse_path))
    con.execute(WAREHOUSE_SQL)
    con.close()
    warehouse = Warehouse(f"duckdb:///{warehouse_path}")
    url = f"sqlite:///{tmp_path / 'catalog.sqlite'}"
    upgrade_catalog(url)
    with catalog_session(url) as session:
        for ws_name in ("Acme", "Globex"):
            ws = workspaces.create_workspace(session, name=ws_name)
            ids = {}
            model_specs = (("customers", "parent", "customer_id", None),
                           ("orders", "related", "order_id", "ordered_at"))  # fmt: skip
            for name, etype, pk, ts in model_specs:
                ids[name] = models.create_model(
                    session, workspace_id=ws.id, columns=warehouse, created_by=None,
                    spec=models.ModelCreate(name=name, source_schema="analytics",
                                            source_table=name, entity_type=etype,
                                            primary_key_column=pk, timestamp_column=ts),
                ).id  # fmt: skip
            rel = relationships.create_relationship(
                session, workspace_id=ws.id, created_by=None,
                spec=relationships.RelationshipCreate(
                    name="customer_orders", from_model_id=ids["customers"],
                    to_model_id=ids["orders"], from_column="customer_id",
                    to_column="customer_id"),
            )  # fmt: skip
            base = audiences.create_audience(
                session, workspace_id=ws.id, created_by=None,
                spec=audiences.AudienceCreate(
                    name="High value", parent_model_id=ids["customers"],
                    filter_tree={"type": "and", "children": [
                        _property("lifetime_value", "greater_than", 1000)]}),
            )  # fmt: skip
            buyers = audiences.create_audience(
                session, workspace_id=ws.id, created_by=None,
                spec=audiences.AudienceCreate(
                    name="High value electronics buyers", parent_model_id=ids["customers"],
                    filter_tree={"type": "and", "children": [
                        {"type": "condition", "condition_type": "audience",
                         "audience_id": base.id, "operator": "is_member"},
                        {"type": "condition", "condition_type": "relation",
                         "relationship_id": rel.id,
                         "filters": _property("category", "equals", "electronics")}]}),
            )  # fmt: skip
            dest = Destination(workspace_id=ws.id, name="files", destination_type="file",
                               config={"path": str(tmp_path)}, status="connected",
                               status_error="")  # fmt: skip
            session.add(dest)
            session.flush()
            for slug, status, schedule in (("hourly", "active", "0 * * * *"),
                                           ("paused", "paused", "*/5 * * * *"),
                                           ("manual", "active", None),
                                           ("broken_cron", "active", "every tuesday"),
                                           # croniter accepts it, Dagster refuses to build it
                                           ("february_31", "active", "0 0 31 2 *")):  # fmt: skip
                session.add(Sync(workspace_id=ws.id, audience_id=buyers.id,
                                 destination_id=dest.id, name=f"sync {slug}", slug=slug,
                                 sync_mode="mirror", schedule=schedule, status=status,
                                 status_error=""))  # fmt: skip
        session.flush()
        return catalog_rows(session)


def test_keys_groups_deps_and_kinds(rows: CatalogRows) -> None:
    defs = catalog_definitions(
        graph_from_rows(rows, dialect="duckdb"),
        table_assets=TABLE_ASSETS,
        kind="duckdb",
        max_member_drop=0.5,
        **DEPENDENCIES,
    )
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    for ws in ("acme", "globex"):
        assert {f"{ws}/audiences/high_value", f"{ws}/audiences/high_value_electronics_buyers",
                f"{ws}/syncs/hourly", f"{ws}/syncs/paused", f"{ws}/syncs/manual",
                f"{ws}/syncs/broken_cron", f"{ws}/syncs/february_31"} <= keys  # fmt: skip
        buyers = graph.get(dg.AssetKey([ws, "audiences", "high_value_electronics_buyers"]))
        # dbt models it reads (parent + related through the relationship) and the audience
        # it references.
        assert set(buyers.parent_keys) >= {
            dg.AssetKey("customers"), dg.AssetKey("orders"),
            dg.AssetKey([ws, "audiences", "high_value"]),
        }  # fmt: skip
        assert buyers.group_name == ws
        sync = graph.get(dg.AssetKey([ws, "syncs", "hourly"]))
        assert set(sync.parent_keys) == {buyers.key}
        assert {"file", "sync"} <= set(sync.kinds)
        assert "High value electronics buyers" in (buyers.description or "")
        checks = {
            c.name for c in defs.get_assets_def(buyers.key).check_specs if c.asset_key == buyers.key
        }
        assert checks == {"not_empty", "member_count_drop"}


def test_schedules_follow_sync_status_and_cron(rows: CatalogRows) -> None:
    defs = catalog_definitions(
        graph_from_rows(rows, dialect="duckdb"),
        table_assets=TABLE_ASSETS,
        kind="duckdb",
        max_member_drop=0.5,
        **DEPENDENCIES,
    )
    schedules = {s.name: s for s in defs.schedules or []}
    assert set(schedules) == {
        "acme__hourly__schedule",
        "acme__paused__schedule",
        "globex__hourly__schedule",
        "globex__paused__schedule",
    }  # fmt: skip  (manual: no schedule; an unparsable cron leaves the sync manual)
    hourly = schedules["acme__hourly__schedule"]
    assert hourly.cron_schedule == "0 * * * *"
    assert hourly.default_status == dg.DefaultScheduleStatus.RUNNING
    assert schedules["acme__paused__schedule"].default_status == dg.DefaultScheduleStatus.STOPPED
    assert hourly.job_name == ASSET_JOB

    # The schedule runs the audience and the sync together, tagged with the sync id.
    with dg.build_schedule_context() as context:
        request = hourly.evaluate_tick(context).run_requests[0]
    assert {k.to_user_string() for k in request.asset_selection} == {
        "acme/audiences/high_value_electronics_buyers", "acme/syncs/hourly",
    }  # fmt: skip
    sync_row = next(s for s in rows.syncs if s.slug == "hourly"
                    and s.workspace_id == request.tags["composable/workspace_id"])  # fmt: skip
    assert request.tags["composable/sync_id"] == sync_row.id
    assert request.tags["composable/trigger"] == "schedule"


def test_definitions_are_deterministic(rows: CatalogRows) -> None:
    def snapshot() -> list[tuple[str, list[str]]]:
        defs = catalog_definitions(
            graph_from_rows(rows, dialect="duckdb"),
            table_assets=TABLE_ASSETS, kind="duckdb",
            max_member_drop=0.5, **DEPENDENCIES,
        )  # fmt: skip
        graph = defs.resolve_asset_graph()
        return sorted(
            (k.to_user_string(), sorted(p.to_user_string() for p in graph.get(k).parent_keys))
            for k in graph.get_all_asset_keys()
        )

    assert snapshot() == snapshot()


def test_a_run_workers_definitions_hold_its_own_assets_only(rows: CatalogRows) -> None:
    """A run worker builds the run's selection (defs/run_worker.py): the same keys, deps and
    checks as the full build has for them, nothing else, no schedule."""
    graph_rows = graph_from_rows(rows, dialect="duckdb")
    full = catalog_definitions(
        graph_rows, table_assets=TABLE_ASSETS, kind="duckdb", max_member_drop=0.5,
        **DEPENDENCIES,
    )  # fmt: skip
    buyers = dg.AssetKey(["acme", "audiences", "high_value_electronics_buyers"])
    hourly = dg.AssetKey(["acme", "syncs", "hourly"])
    scoped = catalog_definitions(
        graph_rows, table_assets=TABLE_ASSETS, kind="duckdb", max_member_drop=0.5,
        only={buyers, hourly}, **DEPENDENCIES,
    )  # fmt: skip
    built = {k for a in scoped.assets or [] for k in a.keys}  # type: ignore[union-attr]
    assert built == {buyers, hourly}
    assert not list(scoped.schedules or [])
    full_graph, scoped_graph = full.resolve_asset_graph(), scoped.resolve_asset_graph()
    for key in (buyers, hourly):
        assert scoped_graph.get(key).parent_keys == full_graph.get(key).parent_keys
    # Upstream assets it does not build stay deps: the referenced audience, the dbt models.
    assert dg.AssetKey(["acme", "audiences", "high_value"]) in scoped_graph.get(buyers).parent_keys
    checks = {c.name for c in scoped.get_assets_def(buyers).check_specs}
    assert checks == {"not_empty", "member_count_drop"}
    job = scoped.resolve_implicit_global_asset_job_def()
    assert {k.to_user_string() for k in job.asset_layer.executable_asset_keys} == {
        "acme/audiences/high_value_electronics_buyers", "acme/syncs/hourly",
    }  # fmt: skip
