"""The two ways the plan gets the members' row hashes (stored by the audience's
materialization, or computed from the parent rows at plan time) agree run after run, a
sync can move between them without resending anything, and a mapping change resends every
member exactly once."""

from __future__ import annotations

import random
from pathlib import Path

import sqlalchemy as sa

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


def test_stored_and_computed_row_hashes_agree_run_after_run(tmp_path: Path, pg_url: str) -> None:
    stored = duckdb_world(tmp_path / "stored")
    computed = duckdb_world(tmp_path / "computed")
    computed.store_row_hashes = False
    jobs = {
        id(w): w.job(destination="postgres", config=pg_config(pg_url, table), mode="mirror",
                     safety={"max_remove_share": 1.0})
        for w, table in ((stored, "stored"), (computed, "computed"))
    }  # fmt: skip
    rng = random.Random(20261130)
    totals = [0, 0, 0]
    for step in range(8):
        low = rng.randrange(0, 400)
        high = rng.randrange(600, CUSTOMERS + 1)
        changes = [
            f"UPDATE analytics.customers SET country = '{rng.choice(['FR', 'GB', 'DE'])}' "
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
        expected = warehouse_rows(stored, low, high)
        assert destination(pg_url, "stored") == expected, f"step {step}"
        assert destination(pg_url, "computed") == expected, f"step {step}"
        if step == 3:
            assert a.failed == (1 if low <= 700 < high else 0)
        totals = [t + n for t, n in zip(totals, (a.added, a.updated, a.removed), strict=True)]
    assert min(totals) > 100  # the sequence exercised adds, updates and removes


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
