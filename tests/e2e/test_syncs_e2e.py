"""The whole system, as a client sees it: `composable serve`, the REST API, Dagster runs,
a real PostgreSQL destination and the DuckDB demo warehouse."""

from __future__ import annotations

import time

import duckdb
import httpx
import pytest
import sqlalchemy as sa

from ..conftest import DemoEnv, RunningSystem

pytestmark = pytest.mark.e2e

THRESHOLD = 1500.0


def _warehouse(demo_env: DemoEnv) -> str:
    return str(demo_env.cwd / ".composable" / "warehouse.duckdb")


def expected_members(demo_env: DemoEnv) -> dict[str, tuple]:
    with duckdb.connect(_warehouse(demo_env), read_only=True) as con:
        rows = con.execute(
            "SELECT customer_id, email, lifetime_value, country FROM analytics.customers "
            f"WHERE lifetime_value > {THRESHOLD}"
        ).fetchall()
    return {r[0]: (r[1], float(r[2]), r[3]) for r in rows}


def destination_rows(pg_url: str) -> dict[str, tuple]:
    engine = sa.create_engine(pg_url)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT entity_key, email, ltv, country FROM public.high_value")
        ).all()
    engine.dispose()
    return {r[0]: (r[1], float(r[2]), r[3]) for r in rows}


def wait_for(system: RunningSystem, sync_id: str, run_id: str) -> dict:
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        run = httpx.get(
            f"{system.workspace_url}/audience-syncs/{sync_id}/runs/{run_id}",
            headers=system.headers, timeout=60,
        ).json()  # fmt: skip
        if run["status"] in ("completed", "failed", "cancelled"):
            return run
        time.sleep(1)
    pytest.fail(f"run {run_id} did not finish")


def trigger(system: RunningSystem, sync_id: str, body: dict | None = None) -> httpx.Response:
    """POST the sync's trigger: no body (the seed's call), or `body`."""
    return httpx.post(
        f"{system.workspace_url}/audience-syncs/{sync_id}/trigger",
        json=body, headers=system.headers, timeout=120,
    )  # fmt: skip


def test_create_trigger_diff_and_history(
    running_system: RunningSystem, demo_env: DemoEnv, pg_url: str
) -> None:
    system, out = running_system, demo_env.init_output
    api = lambda method, path, **kw: httpx.request(  # noqa: E731
        method, f"{system.workspace_url}{path}", headers=system.headers, timeout=120, **kw
    )
    audience = api("POST", "/audiences", json={
        "name": "E2E high value", "parent_model_id": out["model_ids"]["customers"],
        "filter_tree": {"type": "and", "children": [
            {"type": "condition", "condition_type": "property", "column": "lifetime_value",
             "operator": "greater_than", "value": THRESHOLD}]},
    })  # fmt: skip
    assert audience.status_code == 201, audience.text
    destination = api("POST", "/destinations", json={
        "name": "E2E warehouse table", "destination_type": "postgres",
        "config": {"url": pg_url, "table": "public.high_value"},
    })  # fmt: skip
    assert destination.status_code == 201, destination.text
    sync = api("POST", "/audience-syncs", json={
        "name": "High value to Postgres", "audience_id": audience.json()["id"],
        "destination_id": destination.json()["id"], "sync_mode": "mirror",
        "field_mapping": [
            {"source_column": "email", "destination_field": "email"},
            {"source_column": "lifetime_value", "destination_field": "ltv"},
            {"source_column": "country", "destination_field": "country"}],
    })  # fmt: skip
    assert sync.status_code == 201, sync.text
    sync_id = sync.json()["id"]

    # 1. First run: every member arrives. A second trigger meanwhile returns the same run.
    first = trigger(system, sync_id)
    assert first.status_code == 201, first.text
    assert first.json()["status"] in ("queued", "running") and first.json()["trigger"] == "api"
    again = trigger(system, sync_id)
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    run1 = wait_for(system, sync_id, first.json()["id"])
    assert run1["status"] == "completed", run1
    members = expected_members(demo_env)
    assert len(members) > 50 and destination_rows(pg_url) == members
    assert (run1["rows_added"], run1["rows_removed"], run1["rows_failed"]) == (len(members), 0, 0)

    # 2. Change the warehouse: 5 leave, 5 join, 3 change country. Exactly that is applied.
    leaving, staying = sorted(members)[:5], sorted(members)[5:8]
    with duckdb.connect(_warehouse(demo_env)) as con:
        joining = [r[0] for r in con.execute(
            "SELECT customer_id FROM analytics.customers WHERE lifetime_value < 100 "
            "ORDER BY customer_id LIMIT 5").fetchall()]  # fmt: skip
        con.execute("UPDATE analytics.customers SET lifetime_value = 10 WHERE customer_id IN "
                    f"({', '.join(repr(k) for k in leaving)})")  # fmt: skip
        con.execute("UPDATE analytics.customers SET lifetime_value = 5000 WHERE customer_id IN "
                    f"({', '.join(repr(k) for k in joining)})")  # fmt: skip
        con.execute("UPDATE analytics.customers SET country = 'ZZ' WHERE customer_id IN "
                    f"({', '.join(repr(k) for k in staying)})")  # fmt: skip
    second = trigger(system, sync_id)
    assert second.status_code == 201
    run2 = wait_for(system, sync_id, second.json()["id"])
    assert run2["status"] == "completed", run2
    assert (run2["rows_added"], run2["rows_updated"], run2["rows_removed"]) == (5, 3, 5)
    assert run2["rows_processed"] == 13 and run2["duration_seconds"] > 0
    assert destination_rows(pg_url) == expected_members(demo_env)

    # 3. History is Dagster's, newest first, with counts; the sync reflects it.
    runs = api("GET", f"/audience-syncs/{sync_id}/runs").json()
    assert [r["id"] for r in runs] == [second.json()["id"], first.json()["id"]]
    assert [r["rows_added"] for r in runs] == [5, len(members)]
    assert runs[0]["dagster_run_url"].endswith(f"/runs/{second.json()['id']}")
    current = api("GET", f"/audience-syncs/{sync_id}").json()
    assert current["last_run_id"] == second.json()["id"]
    assert current["last_synced_at"] is not None and current["status"] == "active"

    # 4. A failed run puts the sync in error with the reason; a good run clears it.
    api("PUT", f"/audience-syncs/{sync_id}", json={"config": {"max_remove_share": 0.0}})
    with duckdb.connect(_warehouse(demo_env)) as con:
        con.execute("UPDATE analytics.customers SET lifetime_value = 10 WHERE customer_id IN "
                    f"({', '.join(repr(k) for k in joining[:2])})")  # fmt: skip
    failed = wait_for(system, sync_id, trigger(system, sync_id).json()["id"])
    assert failed["status"] == "failed" and "safety stop" in failed["error"]
    errored = api("GET", f"/audience-syncs/{sync_id}").json()
    assert errored["status"] == "error" and "would remove 2" in errored["status_error"]
    assert len(destination_rows(pg_url)) == len(expected_members(demo_env)) + 2  # untouched
    api("PUT", f"/audience-syncs/{sync_id}", json={"config": {}})
    fixed = wait_for(system, sync_id, trigger(system, sync_id).json()["id"])
    assert fixed["status"] == "completed" and fixed["rows_removed"] == 2
    assert api("GET", f"/audience-syncs/{sync_id}").json()["status"] == "active"
    assert destination_rows(pg_url) == expected_members(demo_env)

    # 5. A row the destination refuses fails alone, with its reason on the run.
    refused = sorted(expected_members(demo_env))[0]
    engine = sa.create_engine(pg_url)
    with engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE public.high_value ADD CONSTRAINT no_yy "
                             "CHECK (country <> 'YY') NOT VALID"))  # fmt: skip
    with duckdb.connect(_warehouse(demo_env)) as con:
        original = con.execute("SELECT country FROM analytics.customers WHERE customer_id = ?",
                               [refused]).fetchone()[0]  # fmt: skip
        con.execute("UPDATE analytics.customers SET country = 'YY' WHERE customer_id = ?",
                    [refused])  # fmt: skip
    try:
        partial = wait_for(system, sync_id, trigger(system, sync_id).json()["id"])
        assert partial["status"] == "completed" and partial["rows_failed"] == 1, partial
        [row_error] = partial["row_errors"]
        assert (row_error["entity_key"], row_error["operation"]) == (refused, "update")
        assert "no_yy" in row_error["error"]
        assert destination_rows(pg_url)[refused][2] == original  # left as it was
    finally:
        with duckdb.connect(_warehouse(demo_env)) as con:
            con.execute("UPDATE analytics.customers SET country = ? WHERE customer_id = ?",
                        [original, refused])  # fmt: skip
        with engine.begin() as conn:
            conn.execute(sa.text("ALTER TABLE public.high_value DROP CONSTRAINT no_yy"))
        engine.dispose()
