"""The sync engine against real destinations: exact destination state for every mode,
safety stops, rejected and failed rows retried, split groups, PII hashing."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from composable_dagster.spec.sync import GroupShare, split_ranges
from composable_dagster.sync.engine import SyncSafetyError, recent_errors, run_sync

from .conftest import AUDIENCE_ID, CUSTOMERS, SYNC_ID, World, key


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def email(i: int) -> str:
    return f"user.{i}@example.com"  # what the PII library must make of 'User.<i>@Example.com'


def pg_config(pg_url: str) -> dict:
    return {"url": pg_url, "table": "public.audience", "key_column": "entity_key"}


def table_state(engine: sa.Engine) -> dict[str, tuple]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text('SELECT entity_key, "hashedEmail", score, country FROM public.audience')
        ).all()
    return {r[0]: (r[1], float(r[2]), r[3]) for r in rows}


def expected_row(i: int, country: str | None = None) -> tuple:
    return (sha(email(i)), float(i), country or ("US" if i % 3 == 0 else "DE"))


@pytest.mark.parametrize("mode", ["mirror", "upsert", "add", "remove"])
def test_every_mode_leaves_the_destination_exactly_right(
    any_world: World, pg_url: str, target: sa.Engine, mode: str
) -> None:
    world = any_world
    job = world.job(destination="postgres", config=pg_config(pg_url), mode=mode)
    if mode == "remove":
        # Remove-only syncs act on a list someone else filled: start with every customer.
        with target.begin() as conn:
            conn.execute(
                sa.text(
                    "CREATE TABLE public.audience (entity_key TEXT PRIMARY KEY, "
                    '"hashedEmail" TEXT, score DOUBLE PRECISION, country TEXT)'
                )
            )
            conn.execute(sa.text("INSERT INTO public.audience VALUES (:k, 'x', 0, 'x')"),
                         [{"k": key(i)} for i in range(CUSTOMERS)])  # fmt: skip

    world.members(600, CUSTOMERS)
    first = world.run(job)
    # Run 2: 550..599 join, 950..999 leave, 700..709 change country.
    world.execute("UPDATE analytics.customers SET country = 'FR' WHERE score BETWEEN 700 AND 709")
    world.members(550, 950)
    second = world.run(job)
    third = world.run(job)

    state = table_state(target)
    current = {key(i): expected_row(i, "FR" if 700 <= i <= 709 else None) for i in range(550, 950)}
    if mode == "mirror":
        assert state == current
        assert (second.added, second.updated, second.removed) == (50, 10, 50)
    elif mode == "upsert":
        assert state == current | {key(i): expected_row(i) for i in range(950, CUSTOMERS)}
        assert (second.added, second.updated, second.removed) == (50, 10, 0)
    elif mode == "add":
        # Adds only: the first values stay, leavers stay.
        original = {key(i): expected_row(i) for i in range(550, CUSTOMERS)}
        assert state == original
        assert (second.added, second.updated, second.removed) == (50, 0, 0)
    else:
        assert set(state) == {key(i) for i in range(CUSTOMERS)} - {
            key(i) for i in range(950, CUSTOMERS)
        }
        assert (first.added, second.removed) == (0, 50)
    assert (third.added, third.updated, third.removed, third.failed) == (0, 0, 0, 0)
    assert first.failed == second.failed == 0


def test_file_destination_modes(world: World) -> None:
    out = world.tmp / "files"
    world.members(900, CUSTOMERS)
    mirror = world.job(
        destination="file", config={"path": str(out), "format": "csv"}, mode="mirror"
    )
    world.run(mirror)
    world.members(850, 990)
    report = world.run(mirror)
    files = sorted((out / SYNC_ID).glob("*.csv"))
    assert len(files) == 2 and not list((out / SYNC_ID).glob("*.part"))
    with files[-1].open() as handle:
        rows = list(csv.DictReader(handle))
    # Mirror to a file = the whole current membership, every run.
    assert {r["entity_key"] for r in rows} == {key(i) for i in range(850, 990)}
    assert (report.added, report.removed) == (50, 10)


def test_empty_audience_is_not_mirrored(any_world: World, pg_url: str, target: sa.Engine) -> None:
    world = any_world
    job = world.job(destination="postgres", config=pg_config(pg_url), mode="mirror")
    world.members(900, CUSTOMERS)
    world.run(job)
    world.members(CUSTOMERS)  # the source comes back empty
    with pytest.raises(SyncSafetyError, match="refusing to mirror an empty audience"):
        world.run(job)
    assert len(table_state(target)) == 100  # nothing was removed

    allowed = world.job(destination="postgres", config=pg_config(pg_url), mode="mirror",
                        safety={"allow_empty_mirror": True, "max_remove_share": 1.0})  # fmt: skip
    assert world.run(allowed).removed == 100
    assert table_state(target) == {}


def test_mass_removal_is_stopped(any_world: World, pg_url: str, target: sa.Engine) -> None:
    world = any_world
    world.members(0, CUSTOMERS)
    job = world.job(destination="postgres", config=pg_config(pg_url), mode="mirror")
    world.run(job)
    world.members(800, CUSTOMERS)
    with pytest.raises(SyncSafetyError, match="would remove 800 of 1000"):
        world.run(job)
    assert len(table_state(target)) == CUSTOMERS
    relaxed = world.job(destination="postgres", config=pg_config(pg_url), mode="mirror",
                        safety={"max_remove_share": 0.9})  # fmt: skip
    assert world.run(relaxed).removed == 800


def test_a_stopped_mass_removal_holds_until_a_run_overrides_it(
    world: World, pg_url: str, target: sa.Engine
) -> None:
    """The stop holds run after run (the comparison is with what was delivered); a run a
    person let through (`override_safety`) removes them, and says so in its log."""
    world.members(0, CUSTOMERS)
    job = world.job(destination="postgres", config=pg_config(pg_url), mode="mirror")
    world.run(job)
    world.members(800, CUSTOMERS)
    for _ in range(2):
        with pytest.raises(SyncSafetyError, match="would remove 800 of 1000"):
            world.run(job)
    assert len(table_state(target)) == CUSTOMERS
    logged: list[str] = []
    report = run_sync(world.store, job, run_id="run-override", now=datetime.now(UTC),
                      log=logged.append, override_safety=True)  # fmt: skip
    assert report.removed == 800 and len(table_state(target)) == 200
    assert any("safety stop overridden" in line and "800 of 1000" in line for line in logged)


def test_duplicate_keys_fail_with_a_reason_and_are_retried(
    any_world: World, pg_url: str, target: sa.Engine
) -> None:
    world = any_world
    world.execute("INSERT INTO analytics.customers SELECT * FROM analytics.customers "
                  "WHERE score = 950")  # fmt: skip
    world.members(900, CUSTOMERS)
    job = world.job(destination="postgres", config=pg_config(pg_url), mode="upsert")
    report = world.run(job)
    assert report.failed == 1 and report.added == 99
    assert (key(950), "reject", "duplicate key: 2 source rows") in report.errors
    assert key(950) not in table_state(target)
    assert recent_errors(world.store, SYNC_ID, run_id="run-1") == [
        {"entity_key": key(950), "operation": "reject", "error": "duplicate key: 2 source rows"}
    ]

    world.execute("DELETE FROM analytics.customers WHERE score = 950")
    world.execute(f"INSERT INTO analytics.customers VALUES ('{key(950)}', "
                  "'User.950@Example.com', 950, 'DE')")  # fmt: skip
    world.members(900)  # 950's one row again
    retried = world.run(job)
    assert (retried.added, retried.failed) == (1, 0)
    assert table_state(target)[key(950)] == expected_row(950, "DE")


def test_rows_without_a_key_are_reported_not_sent(
    any_world: World, pg_url: str, target: sa.Engine
) -> None:
    world = any_world
    world.execute("INSERT INTO analytics.customers VALUES (NULL, 'a@x.com', 950, 'DE'), "
                  "(NULL, 'b@x.com', 951, 'DE'), (NULL, 'c@x.com', 10, 'DE')")  # fmt: skip
    world.members(900)  # two of the keyless rows match
    job = world.job(destination="postgres", config=pg_config(pg_url), mode="mirror")
    report = world.run(job)
    assert (report.added, report.failed) == (100, 2)
    reason = "NULL entity key: 2 matching rows have no key"
    assert ("", "reject", reason) in report.errors
    assert set(table_state(target)) == {key(i) for i in range(900, CUSTOMERS)}
    assert recent_errors(world.store, SYNC_ID, run_id="run-1") == [
        {"entity_key": None, "operation": "reject", "error": reason}
    ]
    # Reported on every run until the source is fixed, and only then gone.
    assert world.run(job).failed == 2
    world.execute("DELETE FROM analytics.customers WHERE customer_id IS NULL")
    world.members(900)
    assert world.run(job).failed == 0


def test_rows_the_destination_rejects_are_retried_next_run(
    any_world: World, pg_url: str, target: sa.Engine
) -> None:
    world = any_world
    with target.begin() as conn:
        conn.execute(sa.text('CREATE TABLE public.audience (entity_key TEXT PRIMARY KEY, '
                             '"hashedEmail" TEXT, score DOUBLE PRECISION, '
                             "country TEXT CHECK (country <> 'US'))"))  # fmt: skip
    world.members(900, CUSTOMERS)
    job = world.job(destination="postgres", config=pg_config(pg_url), mode="upsert")
    report = world.run(job)
    us = {key(i) for i in range(900, CUSTOMERS) if i % 3 == 0}
    assert report.failed == len(us) and report.added == 100 - len(us)
    assert set(table_state(target)) == {key(i) for i in range(900, CUSTOMERS)} - us
    assert all(op == "add" and "check" in reason.lower() for _k, op, reason in report.errors)

    with target.begin() as conn:
        conn.execute(sa.text("ALTER TABLE public.audience DROP CONSTRAINT audience_country_check"))
    again = world.run(job)
    assert (again.added, again.failed) == (len(us), 0)
    assert set(table_state(target)) == {key(i) for i in range(900, CUSTOMERS)}


def test_split_groups_partition_the_audience(any_world: World, pg_url: str) -> None:
    world = any_world
    members = world.members(0, CUSTOMERS)
    ranges = split_ranges("split-1", [GroupShare("g-a", 30, 0), GroupShare("g-b", 70, 1)])
    delivered = {}
    for group, bounds in ranges.items():
        job = world.job(destination="postgres", mode="mirror",
                        config={**pg_config(pg_url), "table": f"public.{group.replace('-', '_')}"},
                        split=bounds)  # fmt: skip
        # One sync per group: each has its own snapshot.
        job = dataclasses.replace(
            job, sync_id=f"5e1f0000-0000-4000-8000-00000000000{len(delivered) + 2}"
        )
        world.run(job)
        engine = sa.create_engine(pg_url)
        with engine.connect() as conn:
            delivered[group] = {r[0] for r in conn.execute(
                sa.text(f"SELECT entity_key FROM public.{group.replace('-', '_')}"))}  # fmt: skip
        engine.dispose()
    assert delivered["g-a"].isdisjoint(delivered["g-b"])
    assert delivered["g-a"] | delivered["g-b"] == members

    # The documented assignment, computed independently.
    def bucket(k: str) -> int:
        return int(hashlib.md5(f"split-1:{k}".encode()).hexdigest()[:8], 16) % 10_000

    assert delivered["g-a"] == {k for k in members if bucket(k) < 3000}
    assert 0.25 < len(delivered["g-a"]) / len(members) < 0.35


def test_audience_must_be_materialized_first(world: World, pg_url: str) -> None:
    job = world.job(destination="postgres", config=pg_config(pg_url), mode="mirror")
    with pytest.raises(SyncSafetyError, match="no materialized membership"):
        world.run(job)
    assert AUDIENCE_ID
