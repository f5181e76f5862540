"""kill -9 in the middle of a sync, then a re-run: no member lost, none sent twice."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from composable_dagster.destinations.file import FileDestination

from .conftest import CUSTOMERS, SYNC_ID, World, key

ROOT = Path(__file__).resolve().parents[2]


def _runner(world: World, *, destination: str, config: dict, mode: str) -> str:
    """A script running one sync with batches of one row, so a kill lands mid-run."""
    return textwrap.dedent(f"""
        from pathlib import Path
        from tests.sync.conftest import World
        from composable_dagster.warehouse.activation import ActivationStore
        world = World(
            warehouse=Path({str(world.warehouse)!r}),
            store=ActivationStore(warehouse_url="duckdb:///{world.warehouse}",
                                  home=Path({str(world.store.home)!r})),
            tmp=Path({str(world.tmp)!r}),
        )
        job = world.job(destination={destination!r}, config={config!r}, mode={mode!r},
                        safety={{"batch_size": 1, "max_remove_share": 1.0}})
        world.runs = 100
        world.run(job)
    """)


def _kill_midway(script: str, *, progress, total: int) -> int:
    """Start the run, SIGKILL it once some but not all rows arrived; the progress then."""
    process = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT,
                               stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            done = progress()
            if done > 0:
                break
            if process.poll() is not None:
                pytest.fail(f"the run ended before any progress: {process.stderr.read()}")
            time.sleep(0.02)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == -signal.SIGKILL
    done = progress()
    assert 0 < done < total, "the kill did not land mid-run"
    return done


def test_postgres_destination_converges_after_kill(world: World, pg_url: str) -> None:
    config = {"url": pg_url, "table": "public.audience"}
    engine = sa.create_engine(pg_url)

    def delivered() -> int:
        with engine.connect() as conn:
            exists = conn.execute(sa.text("SELECT to_regclass('public.audience')")).scalar()
            return (
                conn.execute(sa.text("SELECT count(*) FROM public.audience")).scalar()
                if exists
                else 0
            )

    def keys() -> set[str]:
        with engine.connect() as conn:
            return {r[0] for r in conn.execute(sa.text("SELECT entity_key FROM public.audience"))}

    # Phase 1: 400 adds, killed midway, then completed.
    expected = world.members(600)
    done = _kill_midway(_runner(world, destination="postgres", config=config, mode="mirror"),
                        progress=delivered, total=len(expected))  # fmt: skip
    rerun = world.run(world.job(destination="postgres", config=config, mode="mirror"))
    assert keys() == expected
    # The re-run sends what the killed run had not confirmed (and at most the one batch in
    # flight at the kill again, which the key-based upsert applies once).
    assert len(expected) - done <= rerun.added <= len(expected) - done + 1

    # Phase 2: 200 leave and 300 join; killed midway again (removes run first).
    expected = world.members(300, 800)
    start = len(keys())

    def changed() -> int:
        return len(keys() ^ {key(i) for i in range(600, CUSTOMERS)})

    _kill_midway(_runner(world, destination="postgres", config=config, mode="mirror"),
                 progress=changed, total=500)  # fmt: skip
    assert start == 400
    final = world.run(world.job(destination="postgres", config=config, mode="mirror"))
    assert keys() == expected and final.failed == 0
    # Nothing left to do: the snapshot agrees with the destination.
    again = world.run(world.job(destination="postgres", config=config, mode="mirror"))
    assert (again.added, again.updated, again.removed) == (0, 0, 0)
    engine.dispose()


def _file_keys(directory: Path) -> list[str]:
    found = []
    for path in sorted(directory.glob("*.csv")):
        with path.open() as handle:
            found += [row["entity_key"] for row in csv.DictReader(handle)]
    return found


def test_file_destination_publishes_each_member_once_after_kill(world: World) -> None:
    out = world.tmp / "files"
    config = {"path": str(out), "format": "csv"}
    expected = world.members(0)

    def written() -> int:
        parts = list((out / SYNC_ID).glob("*.part")) if (out / SYNC_ID).exists() else []
        return sum(1 for p in parts for _ in p.open()) - len(parts)  # lines minus headers

    _kill_midway(_runner(world, destination="file", config=config, mode="add"),
                 progress=written, total=len(expected))  # fmt: skip
    report = world.run(world.job(destination="file", config=config, mode="add"))
    assert report.added == len(expected)
    published = _file_keys(out / SYNC_ID)
    assert sorted(published) == sorted(expected)  # each member exactly once
    assert not list((out / SYNC_ID).glob("*.part"))  # the killed run's partial file is gone


def test_crash_between_commit_and_publication_is_recovered(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = world.tmp / "files"
    config = {"path": str(out), "format": "csv"}
    expected = world.members(900)
    real_publish = FileDestination.publish

    def crash(self, config, token):
        raise KeyboardInterrupt("power cut after the snapshot commit")

    monkeypatch.setattr(FileDestination, "publish", crash)
    with pytest.raises(KeyboardInterrupt):
        world.run(world.job(destination="file", config=config, mode="add"))
    monkeypatch.setattr(FileDestination, "publish", real_publish)
    assert _file_keys(out / SYNC_ID) == []  # committed, not yet visible

    # The next run publishes the committed file first, and has nothing new to send.
    report = world.run(world.job(destination="file", config=config, mode="add"))
    assert report.added == 0
    assert sorted(_file_keys(out / SYNC_ID)) == sorted(expected)


def test_a_file_committed_for_a_path_no_longer_configured_is_not_published_elsewhere(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    old, new = world.tmp / "old", world.tmp / "new"
    expected = world.members(900)

    def crash(self, config, token):
        raise KeyboardInterrupt("power cut after the snapshot commit")

    with monkeypatch.context() as patched:
        patched.setattr(FileDestination, "publish", crash)
        with pytest.raises(KeyboardInterrupt):
            world.run(world.job(destination="file", config={"path": str(old)}, mode="add"))
    # The destination now writes elsewhere: the old part file cannot be published there,
    # and the new directory, holding nothing yet, gets every member exactly once.
    report = world.run(world.job(destination="file", config={"path": str(new)}, mode="add"))
    assert (report.added, report.diff) == (len(expected), "full")
    assert sorted(_file_keys(new / SYNC_ID)) == sorted(expected)
    assert _file_keys(old / SYNC_ID) == []
