"""A sync's first delivery on DuckDB sends from a spooled file and stores each member once,
in the snapshot: no delta values in a changes table. What it left must agree with the
membership, so the next run finds nothing to do; a key that gained a parent row after the
membership was stored is still rejected, not sent twice."""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa

from composable_dagster.sync.engine import SyncReport, _Tables, run_sync

from .conftest import CUSTOMERS, SYNC_ID, World, key
from .test_engine import expected_row, pg_config, table_state


def test_a_first_delivery_stores_each_member_once_and_the_next_run_has_nothing_to_do(
    world: World, pg_url: str, target: sa.Engine
) -> None:
    world.members(200)
    job = world.job(destination="postgres", config=pg_config(pg_url), mode="mirror",
                    safety={"batch_size": 100})  # fmt: skip
    tables = _Tables(world.store, SYNC_ID, field_count=len(job.fields))
    first_file = world.store.spool_dir / f"first_{SYNC_ID.replace('-', '')}.arrow"
    seen: list[tuple[bool, bool]] = []  # per batch answered: (changes table, spooled file)

    def during_delivery(_report: SyncReport) -> None:
        with world.store.transaction() as conn:
            seen.append((world.store.exists(conn, tables.changes), first_file.exists()))

    report = run_sync(world.store, job, run_id="first", now=datetime.now(UTC),
                      progress=during_delivery)  # fmt: skip
    assert (report.added, report.failed) == (CUSTOMERS - 200, 0)
    assert seen == [(False, True)] * 8  # 800 members in batches of 100
    assert not first_file.exists()  # gone once the snapshot holds it
    assert table_state(target) == {key(i): expected_row(i) for i in range(200, CUSTOMERS)}
    # The snapshot's key hashes (computed again from the keys) are the membership's, and
    # its row hashes those of what was sent: nothing differs, by either kind of diff.
    with world.store.transaction() as conn:
        joined = conn.exec_driver_sql(
            f"SELECT count(*) FROM {tables.snapshot.sql('duckdb')} s JOIN "
            f"{world.store.members_table(job.audience_id).sql('duckdb')} m USING (key_hash)"
        ).scalar()
    assert joined == CUSTOMERS - 200
    again = world.run(job)
    assert (again.added, again.updated, again.removed, again.diff) == (0, 0, 0, "incremental")
    world.members(100)  # 100 join
    later = world.run(job)
    assert (later.added, later.updated, later.removed) == (100, 0, 0)
    assert table_state(target) == {key(i): expected_row(i) for i in range(100, CUSTOMERS)}


def test_a_key_that_gained_a_parent_row_since_its_membership_is_rejected(
    world: World, pg_url: str, target: sa.Engine
) -> None:
    world.members(900)  # C0950 has one parent row here
    world.execute("INSERT INTO analytics.customers SELECT * FROM analytics.customers "
                  "WHERE score = 950")  # fmt: skip
    job = world.job(destination="postgres", config=pg_config(pg_url), mode="mirror")
    report = world.run(job)
    assert (report.added, report.failed) == (99, 1)
    assert (key(950), "reject", "duplicate key: 2 source rows") in report.errors
    assert set(table_state(target)) == {key(i) for i in range(900, CUSTOMERS)} - {key(950)}
