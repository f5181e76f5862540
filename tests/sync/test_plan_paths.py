"""The two ways the plan gets the members' row hashes (stored by the audience's
materialization, or computed from the parent rows at plan time) agree run after run, a
sync can move between them without resending anything, and a mapping change resends every
member exactly once."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import sqlalchemy as sa

from composable_dagster.warehouse import activation

from .conftest import CUSTOMERS, MAPPING, World, duckdb_world, key


def pg_config(pg_url: str, table: str) -> dict:
    return {"url": pg_url, "table": f"public.{table}", "key_column": "entity_key"}


def destination(pg_url: str, table: str) -> dict[str, tuple]:
    engine = sa.create_engine(pg_url)
    with engine.connect() as conn:
        rows = conn.execute(sa.text(f'SELECT entity_key, "hashedEmail", score, country '
                                    f"FROM public.{table}")).all()  # fmt: skip
    engine.dispose()
    return {r[0]: (r[1], float(r[2]), r[3]) for r in rows}


def warehouse_rows(world: World, low: int, high: int) -> dict[str, tuple]:
    """What the destination must hold for members low ≤ score < high: the same values the
    engine sends, hashed email included, read straight from the warehouse."""
    import duckdb

    with duckdb.connect(str(world.warehouse), read_only=True) as con:
        rows = con.execute(
            "SELECT customer_id, sha256(lower(trim(email))), score, country "
            "FROM analytics.customers WHERE score >= ? AND score < ? "
            "AND customer_id IN (SELECT customer_id FROM analytics.customers "
            "GROUP BY 1 HAVING count(*) = 1)",
            [low, high],
        ).fetchall()
    return {r[0]: (r[1], float(r[2]), r[3]) for r in rows}


def refusing_table(pg_url: str, table: str) -> None:
    """The destination table, refusing country 'XX' (rows the destination rejects)."""
    engine = sa.create_engine(pg_url)
    with engine.begin() as conn:
        conn.execute(sa.text(f'CREATE TABLE public.{table} (entity_key TEXT PRIMARY KEY, '
                             '"hashedEmail" TEXT, score DOUBLE PRECISION, '
                             "country TEXT CHECK (country <> 'XX'))"))  # fmt: skip
    engine.dispose()


@pytest.mark.parametrize("mode", ["mirror", "add"])
def test_incremental_and_full_diffs_agree_run_after_run(
    tmp_path: Path, pg_url: str, mode: str
) -> None:
    """A random sequence of membership changes, value changes, duplicated keys and rows the
    destination refuses: the sync diffing the membership log (stored row hashes) and the
    one comparing every member (hashes computed from the parent rows) send the same rows
    and leave the same destination, run after run."""
    stored = duckdb_world(tmp_path / "stored")
    computed = duckdb_world(tmp_path / "computed")
    computed.store_row_hashes = False
    jobs = {}
    for world, table in ((stored, f"stored_{mode}"), (computed, f"computed_{mode}")):
        refusing_table(pg_url, table)
        jobs[id(world)] = world.job(
            destination="postgres", config=pg_config(pg_url, table), mode=mode,
            safety={"max_remove_share": 1.0},
        )  # fmt: skip
    rng = random.Random(20261130)
    totals = [0, 0, 0, 0]
    for step in range(10):
        low = rng.randrange(0, 400)
        high = rng.randrange(600, CUSTOMERS + 1)
        country = "XX" if step in (2, 4) else rng.choice(["FR", "GB", "DE"])
        changes = [
            f"UPDATE analytics.customers SET country = '{country}' "
            f"WHERE score % {rng.randrange(7, 40)} = {rng.randrange(0, 7)}",
            f"UPDATE analytics.customers SET email = 'User.' || score || '@Step{step}.com' "
            f"WHERE score BETWEEN {rng.randrange(0, 900)} AND {rng.randrange(900, 1000)}",
        ]
        if step == 3:  # a key appears twice in the parent model, then is fixed
            changes.append("INSERT INTO analytics.customers SELECT * FROM analytics.customers "
                           "WHERE score = 700")  # fmt: skip
        if step == 5:
            changes.append(
                "DELETE FROM analytics.customers WHERE score = 700 AND rowid = "
                "(SELECT max(rowid) FROM analytics.customers WHERE score = 700)"
            )
        if step == 8:  # the refused values are fixed: what failed goes through now
            changes.append("UPDATE analytics.customers SET country = 'DE' WHERE country = 'XX'")
        reports = []
        for world in (stored, computed):
            for sql in changes:
                world.execute(sql)
            world.members(low, high)
            reports.append(world.run(jobs[id(world)]))
        a, b = reports
        assert (a.added, a.updated, a.removed, a.failed) == (
            b.added, b.updated, b.removed, b.failed,
        ), f"step {step}"  # fmt: skip
        assert (a.diff, b.diff) == ("incremental" if step else "full", "full"), f"step {step}"
        state = destination(pg_url, f"stored_{mode}")
        assert state == destination(pg_url, f"computed_{mode}"), f"step {step}"
        if mode == "mirror" and step >= 8:
            assert state == warehouse_rows(stored, low, high), f"step {step}"
        totals = [t + n for t, n in zip(totals, (a.added, a.updated, a.removed, a.failed),
                                        strict=True)]  # fmt: skip
    # The sequence exercised adds, removes (mirror), updates (mirror) and refused rows.
    assert totals[0] > 100 and totals[3] > 10
    assert (totals[1] > 100 and totals[2] > 100) if mode == "mirror" else totals[1:3] == [0, 0]


def test_a_sync_behind_the_log_compares_every_member(
    world: World, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(activation, "MEMBERSHIP_LOG_VERSIONS", 2)
    job = world.job(destination="postgres", config=pg_config(pg_url, "audience"), mode="mirror",
                    safety={"max_remove_share": 1.0})  # fmt: skip
    world.members(500)
    world.run(job)
    world.members(400)
    assert world.run(job).diff == "incremental"  # one version behind: the log has it
    for low in (300, 200, 100):  # three materializations without a run: beyond the log
        world.members(low, 900)
    behind = world.run(job)
    assert behind.diff == "full"
    assert (behind.added, behind.removed) == (300, 100)
    assert set(destination(pg_url, "audience")) == {key(i) for i in range(100, 900)}
    assert world.run(job).diff == "incremental"


def test_a_sync_moves_between_paths_without_resending(world: World, pg_url: str) -> None:
    job = world.job(destination="postgres", config=pg_config(pg_url, "audience"), mode="mirror")
    world.store_row_hashes = False  # materialized before the sync existed
    world.members(500)
    assert world.run(job).added == 500
    world.store_row_hashes = True  # the next materialization knows the sync
    world.members(500)
    quiet = world.run(job)
    assert (quiet.added, quiet.updated, quiet.removed) == (0, 0, 0)
    world.execute("UPDATE analytics.customers SET country = 'FR' WHERE score BETWEEN 600 AND 604")
    world.members(500)
    assert world.run(job).updated == 5
    world.store_row_hashes = False
    world.members(500)
    again = world.run(job)
    assert (again.added, again.updated, again.removed) == (0, 0, 0)


def test_a_mapping_change_resends_every_member_once(world: World, pg_url: str) -> None:
    config = pg_config(pg_url, "audience")
    world.members(900)
    assert world.run(world.job(destination="postgres", config=config, mode="upsert")).added == 100
    # Another source for one field: every delivered value of it is stale now.
    remapped = [*MAPPING[:2], {"source_column": "customer_id", "destination_field": "country"}]
    changed = world.job(destination="postgres", config=config, mode="upsert", mapping=remapped)
    first = world.run(changed)
    assert (first.added, first.updated, first.removed) == (0, 100, 0)
    assert {k: v[2] for k, v in destination(pg_url, "audience").items()} == {
        key(i): key(i) for i in range(900, CUSTOMERS)
    }
    second = world.run(changed)
    assert (second.added, second.updated, second.removed) == (0, 0, 0)


def test_another_destination_gets_every_member(world: World, pg_url: str) -> None:
    world.members(800)
    first = world.job(destination="postgres", config=pg_config(pg_url, "first"), mode="mirror")
    assert world.run(first).added == 200
    # The sync now points at another destination: it holds nothing of the snapshot.
    moved = world.job(destination="postgres", config=pg_config(pg_url, "second"),
                      mode="mirror", destination_id="destination-2")  # fmt: skip
    report = world.run(moved)
    assert (report.added, report.diff) == (200, "full")
    assert set(destination(pg_url, "second")) == {key(i) for i in range(800, CUSTOMERS)}
    assert world.run(moved).added == 0


def test_a_destination_pointed_at_another_table_gets_every_member(
    world: World, pg_url: str
) -> None:
    world.members(800)
    world.run(world.job(destination="postgres", config=pg_config(pg_url, "before"), mode="mirror"))
    # The same catalog destination, edited (PUT /destinations) to write another table.
    edited = world.job(destination="postgres", config=pg_config(pg_url, "after"), mode="mirror")
    report = world.run(edited)
    assert (report.added, report.removed, report.diff) == (200, 0, "full")
    assert set(destination(pg_url, "after")) == {key(i) for i in range(800, CUSTOMERS)}
    assert world.run(edited).added == 0


def test_an_edit_of_how_to_deliver_resends_nothing(world: World, pg_url: str) -> None:
    world.members(800)
    config = pg_config(pg_url, "audience")
    world.run(world.job(destination="postgres", config=config, mode="mirror"))
    # Same table, reached with another driver name and without creating it: same place.
    same_place = {**config, "create_table": False,
                  "url": pg_url.replace("postgresql+psycopg://", "postgresql://")}  # fmt: skip
    world.members(790)
    report = world.run(world.job(destination="postgres", config=same_place, mode="mirror"))
    assert (report.added, report.removed, report.diff) == (10, 0, "incremental")


def test_another_audience_is_diffed_against_what_was_delivered(world: World, pg_url: str) -> None:
    other = "a0d10000-0000-4000-8000-000000000002"
    config = pg_config(pg_url, "audience")
    world.members(800)
    world.members(850, audience_id=other)
    world.run(world.job(destination="postgres", config=config, mode="mirror"))
    repointed = world.job(destination="postgres", config=config, mode="mirror",
                          audience_id=other)  # fmt: skip
    report = world.run(repointed)
    # Who was delivered is kept: the old audience's extra members are removed; the other
    # audience's version numbers say nothing about this snapshot, so every member is compared.
    assert (report.removed, report.diff) == (50, "full")
    assert set(destination(pg_url, "audience")) == {key(i) for i in range(850, CUSTOMERS)}
    world.members(860, audience_id=other)
    again = world.run(repointed)
    assert (again.removed, again.diff) == (10, "incremental")
