"""Every sync mode against every destination, through the engine: the destination ends up
exactly as the mode promises. (PostgreSQL has its own matrix over every store in
test_engine.py; here the webhook receiver is a real HTTP server on 127.0.0.1 and the file
destination writes real files.)"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from composable_dagster.destinations.base import DeliveryError
from composable_dagster.sync.engine import run_sync
from tests.webhook_receiver import Receiver, serving_receiver

from .conftest import CUSTOMERS, SYNC_ID, World, key

State = dict[str, tuple[str, float, str]]  # key -> (hashedEmail, score, country)


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def row(i: int, country: str | None = None) -> tuple[str, float, str]:
    return (sha(f"user.{i}@example.com"), float(i), country or ("US" if i % 3 == 0 else "DE"))


def webhook_state(receiver: Receiver, start: State) -> State:
    """The receiver's copy after applying every request in order, as a CRM would."""
    state = dict(start)
    for request in receiver.requests:
        for record in request.json()["records"]:
            data = record["data"]
            if record["operation"] == "remove":
                state.pop(record["key"], None)
            else:
                state[record["key"]] = (data["hashedEmail"], float(data["score"]), data["country"])
    return state


def file_state(directory: Path, mode: str) -> State:
    """What a reader of the published files holds: the newest file for a mirror (each is a
    full snapshot), every file applied in order otherwise."""
    files = sorted(directory.glob("*.parquet"))
    assert not list(directory.glob("*.part"))
    state: State = {}
    for path in files[-1:] if mode == "mirror" else files:
        if mode == "mirror":
            state = {}
        for r in pq.read_table(path).to_pylist():
            if mode == "add" and r["entity_key"] in state:
                continue
            state[r["entity_key"]] = (r["hashedEmail"], float(r["score"]), r["country"])
    return state


SCENARIO_EXPECTED: dict[str, Callable[[], State]] = {
    # After: members 600..999, then 550..949 with 700..709 moved to FR, then no change.
    "mirror": lambda: {key(i): row(i, "FR" if 700 <= i <= 709 else None) for i in range(550, 950)},
    "upsert": lambda: (
        {key(i): row(i, "FR" if 700 <= i <= 709 else None) for i in range(550, 950)}
        | {key(i): row(i) for i in range(950, CUSTOMERS)}
    ),
    "add": lambda: {key(i): row(i) for i in range(550, CUSTOMERS)},
}
SECOND_RUN = {"mirror": (50, 10, 50), "upsert": (50, 10, 0), "add": (50, 0, 0)}


def run_scenario(world: World, job) -> list:
    world.members(600, CUSTOMERS)
    reports = [world.run(job)]
    world.execute("UPDATE analytics.customers SET country = 'FR' WHERE score BETWEEN 700 AND 709")
    world.members(550, 950)
    reports.append(world.run(job))
    reports.append(world.run(job))
    return reports


@pytest.mark.parametrize("mode", ["mirror", "upsert", "add", "remove"])
def test_webhook_every_mode(world: World, receiver: Receiver, mode: str) -> None:
    job = world.job(destination="webhook", config={"url": receiver.url}, mode=mode)
    first, second, third = run_scenario(world, job)
    if mode == "remove":
        # A remove-only sync acts on a list someone else filled: every customer.
        start = {key(i): row(i) for i in range(CUSTOMERS)}
        state = webhook_state(receiver, start)
        assert set(state) == {key(i) for i in range(950)}
        assert (first.added, second.removed) == (0, 50)
        assert {r.json()["operation"] for r in receiver.requests} == {"remove"}
        # Removes carry the values last seen, so a list keyed by email can drop them.
        removed = [rec for r in receiver.requests for rec in r.json()["records"]]
        assert removed[0]["data"]["hashedEmail"] == row(950)[0]
    else:
        assert webhook_state(receiver, {}) == SCENARIO_EXPECTED[mode]()
        assert (second.added, second.updated, second.removed) == SECOND_RUN[mode]
    assert (third.added, third.updated, third.removed, third.failed) == (0, 0, 0, 0)
    assert first.failed == second.failed == 0


@pytest.mark.parametrize("mode", ["mirror", "upsert", "add"])
def test_file_every_mode(world: World, mode: str) -> None:
    out = world.tmp / "files"
    job = world.job(destination="file", config={"path": str(out), "format": "parquet"}, mode=mode)
    _, second, third = run_scenario(world, job)
    assert file_state(out / SYNC_ID, mode) == SCENARIO_EXPECTED[mode]()
    assert (second.added, second.updated, second.removed) == SECOND_RUN[mode]
    # A run with nothing to send writes no file, except a mirror (its file is the snapshot).
    assert len(list((out / SYNC_ID).glob("*.parquet"))) == (3 if mode == "mirror" else 2)
    assert (third.added, third.updated, third.removed, third.failed) == (0, 0, 0, 0)


def test_idempotency_keys_are_per_run_and_batch(world: World, receiver: Receiver) -> None:
    """A retried request repeats its key; the same change in a later run gets a new one, so
    a receiver that drops repeated keys never drops a member who left and came back."""
    receiver.script.append(("status", 503, {}, b"busy"))  # the first request is retried
    job = world.job(
        destination="webhook", config={"url": receiver.url, "batch_size": 10_000},
        mode="mirror", safety={"batch_size": 5, "max_remove_share": 1.0},
    )  # fmt: skip
    world.members(980)
    world.run(job)  # adds 980..999 in four batches, the first sent twice
    world.members(980, 990)
    world.run(job)  # removes 990..999
    world.members(980)
    world.run(job)  # adds 990..999 again, unchanged

    sent = [(r.headers["idempotency-key"], r.json()) for r in receiver.requests]
    keys = [k for k, _ in sent]
    assert len(sent) == 9 and keys[0] == keys[1]  # the retry repeated its key
    assert len(set(keys)) == 8  # every other request has a key of its own
    first_adds = [json.dumps(body["records"]) for _, body in sent[3:5]]
    last_adds = [json.dumps(body["records"]) for _, body in sent[7:9]]
    assert first_adds == last_adds  # the same records, yet new keys: nothing is dropped
    assert webhook_state(receiver, {}) == {key(i): row(i) for i in range(980, CUSTOMERS)}


def test_batches_confirmed_before_a_failure_are_not_sent_again(
    world: World, receiver: Receiver
) -> None:
    """The destination fails for good after two batches: the run stops, and the next run
    (the destination back) sends only what was not confirmed, each member once."""
    receiver.script.extend([("status", 200, {}, b"ok")] * 2 + [("status", 503, {}, b"down")])
    job = world.job(
        destination="webhook", config={"url": receiver.url, "max_retries": 0},
        mode="mirror", safety={"batch_size": 5},
    )  # fmt: skip
    members = world.members(980)
    with pytest.raises(DeliveryError, match="HTTP 503"):
        world.run(job)
    rerun = world.run(job)
    assert rerun.added == len(members) - 10
    sent = [rec["key"] for r in receiver.requests for rec in r.json()["records"]]
    delivered = [
        rec["key"]
        for r, answer in zip(receiver.requests, ["ok", "ok", "down"] + ["ok"] * 10, strict=False)
        if answer == "ok"
        for rec in r.json()["records"]
    ]
    assert sorted(delivered) == sorted(members)  # every member once: none lost, none twice
    assert len(sent) == len(members) + 5  # the refused batch was the only one sent twice


def test_the_destination_batch_size_is_what_goes_on_the_wire(
    world: World, receiver: Receiver
) -> None:
    """One request per batch of the config's `batch_size` (the engine once cut 500 whatever
    it said), or of the sync's own `batch_size` when that is smaller."""
    world.members(0)
    world.run(world.job(destination="webhook", config={"url": receiver.url, "batch_size": 1000},
                        mode="mirror"))  # fmt: skip
    assert [len(r.json()["records"]) for r in receiver.requests] == [CUSTOMERS]
    receiver.requests.clear()
    world.members(0, 700)
    world.run(world.job(destination="webhook", config={"url": receiver.url, "batch_size": 120},
                        mode="mirror", safety={"max_remove_share": 1.0}))  # fmt: skip
    assert [len(r.json()["records"]) for r in receiver.requests] == [120, 120, 60]
    assert all(":" not in r.headers["idempotency-key"] for r in receiver.requests)


def test_requests_confirmed_before_request_k_fails_are_never_sent_again(
    world: World, receiver: Receiver
) -> None:
    """Request 4 of 10 fails for good: requests 1-3 stay committed (the run reports them),
    and the next run sends the other 700 members, none twice."""
    receiver.script.extend([("status", 200, {}, b"ok")] * 3 + [("status", 503, {}, b"down")])
    job = world.job(
        destination="webhook", config={"url": receiver.url, "batch_size": 100, "max_retries": 0},
        mode="mirror",
    )  # fmt: skip
    members = world.members(0)
    seen: list = []
    with pytest.raises(DeliveryError, match="HTTP 503"):
        run_sync(world.store, job, run_id="run-a", now=datetime.now(UTC), progress=seen.append)
    assert (seen[-1].added, seen[-1].failed) == (300, 0)  # what the failed run delivered
    assert world.run(job).added == len(members) - 300
    answers = ["ok"] * 3 + ["down"] + ["ok"] * 100
    delivered = [
        rec["key"]
        for r, answer in zip(receiver.requests, answers, strict=False)
        if answer == "ok"
        for rec in r.json()["records"]
    ]
    assert len(delivered) == len(members) and set(delivered) == members


def test_a_stalled_destination_holds_back_no_other_sync_or_audience(
    world: World, receiver: Receiver
) -> None:
    """Sync A's receiver takes 5 s to answer (a slow endpoint, a Retry-After wait): while
    A waits, sync B runs to the end and another audience materializes, on the same store."""
    receiver.script.append(("sleep", 5.0))
    with serving_receiver() as fast:
        world.members(0)
        stalled = world.job(destination="webhook", config={"url": receiver.url}, mode="mirror")
        free = replace(
            world.job(destination="webhook", config={"url": fast.url}, mode="mirror"),
            sync_id="5e1f0000-0000-4000-8000-000000000002",
        )
        a = threading.Thread(target=world.run, args=(stalled,))
        a.start()
        deadline = time.monotonic() + 30
        while not receiver.requests and time.monotonic() < deadline:
            time.sleep(0.05)
        assert receiver.requests, "sync A never reached its destination"
        report = world.run(free)
        world.members(100, audience_id="a0d10000-0000-4000-8000-000000000002")
        assert a.is_alive(), "sync B and the audience should not have waited for sync A"
        a.join(timeout=60)
    assert report.added == CUSTOMERS
    assert len({rec["key"] for r in fast.requests for rec in r.json()["records"]}) == CUSTOMERS
    assert len(receiver.requests) == 2  # A went on: its 1,000 members in two requests
