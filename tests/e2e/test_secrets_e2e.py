"""No secret is ever written to Dagster's storage: a real run through `composable serve`
delivers to a webhook with every kind of secret, then every file under DAGSTER_HOME (run,
event and schedule storage, compressed snapshots, compute logs) is searched for them."""

from __future__ import annotations

import base64
import contextlib
import gzip
import hashlib
import hmac
import sqlite3
import time
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ..conftest import DemoEnv, RunningSystem
from ..webhook_receiver import Receiver

pytestmark = pytest.mark.e2e


def _decoded(blob: bytes) -> Iterator[bytes]:
    """The blob and what it decompresses to (Dagster stores snapshots zlib-compressed)."""
    yield blob
    for decompress in (zlib.decompress, gzip.decompress):
        with contextlib.suppress(zlib.error, OSError, EOFError):
            yield decompress(blob)


def stored_bytes(root: Path) -> Iterator[tuple[str, bytes]]:
    """(where, bytes) for every file under `root`, and every value of every SQLite table."""
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        raw = path.read_bytes()
        yield str(path), raw
        if not raw.startswith(b"SQLite format 3"):
            continue
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            tables = [
                r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")
            ]
            for table in tables:
                for row in con.execute(f'SELECT * FROM "{table}"'):  # names from sqlite_master
                    for value in row:
                        if isinstance(value, str):
                            value = value.encode()
                        if isinstance(value, bytes):
                            for decoded in _decoded(value):
                                yield f"{path}:{table}", decoded
        finally:
            con.close()


def test_a_real_run_leaves_no_secret_in_dagster_storage(
    running_system: RunningSystem, demo_env: DemoEnv, receiver: Receiver
) -> None:
    system, out = running_system, demo_env.init_output
    header, signing, password, token = (f"s3cret-{k}-{uuid.uuid4().hex}" for k in "hspt")
    secrets = (
        header,
        signing,
        password,
        token,
        base64.b64encode(f"hook:{password}".encode()).decode(),
    )
    hook_url = receiver.url.replace("://", f"://hook:{password}@").replace(
        "token=q", f"token={token}"
    )
    api = lambda method, path, **kw: httpx.request(  # noqa: E731
        method, f"{system.workspace_url}{path}", headers=system.headers, timeout=120, **kw
    )
    audience = api("POST", "/audiences", json={
        "name": f"Secret check {uuid.uuid4().hex[:6]}",
        "parent_model_id": out["model_ids"]["customers"],
        "filter_tree": {"type": "and", "children": [
            {"type": "condition", "condition_type": "property", "column": "lifetime_value",
             "operator": "greater_than", "value": 4000}]},
    })  # fmt: skip
    assert audience.status_code == 201, audience.text
    destination = api("POST", "/destinations", json={
        "name": f"Signed hook {uuid.uuid4().hex[:6]}", "destination_type": "webhook",
        "config": {"url": hook_url, "headers": {"X-Api-Key": header},
                   "signing_secret": signing},
    })  # fmt: skip
    assert destination.status_code == 201, destination.text
    sync = api("POST", "/audience-syncs", json={
        "name": f"Secret sync {uuid.uuid4().hex[:6]}", "audience_id": audience.json()["id"],
        "destination_id": destination.json()["id"], "sync_mode": "upsert",
        "field_mapping": [{"source_column": "email", "destination_field": "email"}],
    })  # fmt: skip
    assert sync.status_code == 201, sync.text
    sync_id = sync.json()["id"]
    run = api("POST", f"/audience-syncs/{sync_id}/trigger")
    assert run.status_code == 201, run.text
    deadline = time.monotonic() + 240
    while (state := api("GET", f"/audience-syncs/{sync_id}/runs/{run.json()['id']}").json())[
        "status"
    ] not in ("completed", "failed", "cancelled"):
        assert time.monotonic() < deadline, state
        time.sleep(1)
    assert state["status"] == "completed" and state["rows_added"] > 0, state

    # The run used the real secrets: the receiver saw them, and the signature verifies.
    assert receiver.requests
    for request in receiver.requests:
        assert request.headers["x-api-key"] == header
        basic = base64.b64encode(f"hook:{password}".encode()).decode()
        assert request.headers["authorization"] == f"Basic {basic}"  # the URL's userinfo
        assert f"token={token}" in request.path
        expected = hmac.new(signing.encode(), request.body, hashlib.sha256).hexdigest()
        assert request.headers["x-composable-signature"] == f"sha256={expected}"

    # None of them is anywhere in Dagster's storage, nor in what the processes logged.
    dagster_home = demo_env.cwd / ".composable" / "dagster"
    searched = 0
    for where, data in [
        *stored_bytes(dagster_home),
        ("serve.log", (demo_env.cwd / "serve.log").read_bytes()),
    ]:
        searched += 1
        for value in secrets:
            assert value.encode() not in data, f"a secret is stored in {where}"
    assert searched > 10  # the run, event and schedule storage were really read
    # What Dagster does store is found: the scan looks in the right place. The run's tags
    # (the sync id, in the runs table) and the definitions' snapshot (the sync's name, in
    # the compressed `snapshots` table), where a destination config used to be.
    stored = [data for _where, data in stored_bytes(dagster_home)]
    assert any(sync_id.encode() in data for data in stored)
    assert any(sync.json()["name"].encode() in data for data in stored)
    assert not any(b"hook:********@" in data for data in stored)  # no config at all now
