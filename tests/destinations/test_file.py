"""The file destination: one part file per run, published by rename, read back for real."""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import io
import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from composable_dagster.destinations import DESTINATION_TYPES
from composable_dagster.destinations.base import (
    DeliveryError,
    Operation,
    RecordBatch,
    SyncContext,
    SyncMode,
)
from composable_dagster.destinations.file import FileConfig, FileDestination
from composable_dagster.errors import InvalidInputError

STARTED = dt.datetime(2024, 6, 15, 8, 30, 5, tzinfo=dt.UTC)
DESTINATION = FileDestination()


def make_config(path: Path, **overrides: object) -> FileConfig:
    config = DESTINATION.parse_config({"path": str(path), **overrides})
    assert isinstance(config, FileConfig)
    return config


def context(mode: SyncMode = SyncMode.UPSERT, run_id: str = "run-1") -> SyncContext:
    return SyncContext(sync_id="sync-7", run_id=run_id, mode=mode)


def batch(operation: Operation, keys: list[str], **columns: pa.Array | list) -> RecordBatch:
    return RecordBatch(
        operation=operation, keys=keys, rows=pa.table(columns), idempotency_key=f"ik-{keys[0]}"
    )


ADDS = batch(
    Operation.ADD,
    ["c1", "c2", "c3"],
    email=["a@example.com", "", None],
    points=pa.array([1, None, 3], pa.int64()),
    ltv=[1.5, 2.25, None],
    vip=[True, False, None],
    seen=pa.array(
        [dt.datetime(2024, 1, 1, 12, tzinfo=dt.UTC), None, dt.datetime(2024, 2, 1, tzinfo=dt.UTC)],
        pa.timestamp("us", "UTC"),
    ),
    city=["Zürich", 'naïve, "quoted"', "line\nbreak"],
)
UPDATES = batch(
    Operation.UPDATE,
    ["c4"],
    email=["d@example.com"],
    points=pa.array([4], pa.int64()),
    ltv=[4.0],
    vip=[True],
    seen=pa.array([dt.datetime(2024, 3, 1, tzinfo=dt.UTC)], pa.timestamp("us", "UTC")),
    city=["Oslo"],
)


def read_back(path: Path, fmt: str) -> list[dict]:
    """Rows of a published file as Python values (CSV and JSON values as text)."""
    raw = path.read_bytes()
    if path.suffix == ".gz":
        raw = gzip.decompress(raw)
    if fmt == "parquet":
        return pq.read_table(io.BytesIO(raw)).to_pylist()
    if fmt == "jsonl":
        return [json.loads(line) for line in raw.decode().splitlines()]
    return list(csv.DictReader(io.StringIO(raw.decode(), newline="")))


FORMATS = [
    ("csv", "none"),
    ("csv", "gzip"),
    ("jsonl", "none"),
    ("jsonl", "gzip"),
    ("parquet", "none"),
]


@pytest.mark.parametrize(("fmt", "compression"), FORMATS)
def test_run_writes_one_file_published_by_rename(
    tmp_path: Path, fmt: str, compression: str
) -> None:
    config = make_config(tmp_path, format=fmt, compression=compression, file_prefix="aud_")
    connector = DESTINATION.open(config, context=context(), started_at=STARTED)
    assert connector.deliver(ADDS).confirmed == ["c1", "c2", "c3"]
    assert connector.deliver(UPDATES).confirmed == ["c4"]
    token = connector.stage()
    assert token is not None

    suffix = ".gz" if compression == "gzip" else ""
    final = tmp_path / "aud_sync-7" / f"20240615T083005Z_run-1.{fmt}{suffix}"
    assert Path(token) == final.with_name(final.name + ".part")
    assert Path(token).exists() and not final.exists()  # invisible until published

    DESTINATION.publish(config, token)
    assert final.exists() and not Path(token).exists()
    DESTINATION.publish(config, token)  # recovery re-publish: a no-op
    connector.close(success=True)
    assert sorted(p.name for p in final.parent.iterdir()) == [final.name]

    rows = read_back(final, fmt)
    assert [r["entity_key"] for r in rows] == ["c1", "c2", "c3", "c4"]
    assert [r["operation"] for r in rows] == ["add", "add", "add", "update"]
    assert list(rows[0]) == [
        "entity_key",
        "operation",
        "email",
        "points",
        "ltv",
        "vip",
        "seen",
        "city",
    ]
    assert [r["city"] for r in rows] == ["Zürich", 'naïve, "quoted"', "line\nbreak", "Oslo"]
    if fmt == "parquet":
        assert rows[1]["points"] is None and rows[2]["email"] is None
        assert rows[0]["seen"] == dt.datetime(2024, 1, 1, 12, tzinfo=dt.UTC)
        assert rows[3]["vip"] is True
    elif fmt == "jsonl":
        assert rows[1]["email"] == "" and rows[2]["email"] is None
        assert rows[0]["points"] == 1 and rows[0]["ltv"] == 1.5 and rows[2]["vip"] is None
        assert dt.datetime.fromisoformat(rows[0]["seen"]) == dt.datetime(
            2024, 1, 1, 12, tzinfo=dt.UTC
        )
    else:
        assert rows[0]["points"] == "1" and rows[1]["points"] == ""
        assert rows[0]["vip"] == "true" and rows[3]["ltv"] == "4"
        assert rows[0]["seen"].startswith("2024-01-01 12:00:00")


def test_failed_run_leaves_no_file(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    connector = DESTINATION.open(config, context=context(), started_at=STARTED)
    connector.deliver(ADDS)
    connector.close(success=False)
    assert list((tmp_path / "sync-7").iterdir()) == []


def test_staged_but_uncommitted_run_leaves_no_file(tmp_path: Path) -> None:
    # stage() succeeded but the engine's snapshot commit failed: close(success=False).
    config = make_config(tmp_path, format="parquet")
    connector = DESTINATION.open(config, context=context(), started_at=STARTED)
    connector.deliver(ADDS)
    token = connector.stage()
    assert token is not None and Path(token).exists()
    connector.close(success=False)
    assert list((tmp_path / "sync-7").iterdir()) == []


def test_open_removes_orphaned_parts_of_earlier_runs_only(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    directory = tmp_path / "sync-7"
    directory.mkdir()
    orphan = directory / "20240615T080000Z_run-0.csv.part"
    orphan.write_text("entity_key,operation\n")
    published = directory / "20240615T080000Z_run-00.csv"
    published.write_text("entity_key,operation\n")
    later = directory / "20240615T090000Z_run-9.csv.part"  # a clock ahead: not ours to judge
    later.write_text("")
    other_sync = tmp_path / "sync-8" / "20240615T080000Z_run-0.csv.part"
    other_sync.parent.mkdir()
    other_sync.write_text("")

    connector = DESTINATION.open(config, context=context(), started_at=STARTED)
    assert not orphan.exists()
    assert published.exists() and later.exists() and other_sync.exists()
    connector.close(success=False)


def test_crash_before_publish_is_recovered_by_publishing_the_token(tmp_path: Path) -> None:
    config = make_config(tmp_path, format="jsonl")
    connector = DESTINATION.open(config, context=context(), started_at=STARTED)
    connector.deliver(ADDS)
    token = connector.stage()
    assert token is not None
    # The process dies here: no publish, no close. The engine later publishes the token it
    # committed, then opens the next run, which must not treat the published file as orphan.
    DESTINATION.publish(config, token)
    later = STARTED + dt.timedelta(hours=1)
    next_run = DESTINATION.open(config, context=context(run_id="run-2"), started_at=later)
    next_run.deliver(UPDATES)
    DESTINATION.publish(config, next_run.stage() or "")
    next_run.close(success=True)
    names = sorted(p.name for p in (tmp_path / "sync-7").iterdir())
    assert names == ["20240615T083005Z_run-1.jsonl", "20240615T093005Z_run-2.jsonl"]


def test_mirror_run_without_members_publishes_an_empty_snapshot(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    connector = DESTINATION.open(config, context=context(SyncMode.MIRROR), started_at=STARTED)
    token = connector.stage()
    assert token is not None
    DESTINATION.publish(config, token)
    connector.close(success=True)
    final = Path(token.removesuffix(".part"))
    assert final.read_text().strip() == '"entity_key","operation"'


def test_add_run_without_changes_stages_nothing(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    connector = DESTINATION.open(config, context=context(SyncMode.ADD), started_at=STARTED)
    assert connector.stage() is None
    connector.close(success=True)
    assert list((tmp_path / "sync-7").iterdir()) == []


def test_publish_refuses_unknown_or_foreign_tokens(tmp_path: Path) -> None:
    config = make_config(tmp_path / "out")
    with pytest.raises(DeliveryError, match="neither the staged part nor the published file"):
        DESTINATION.publish(config, str(tmp_path / "out" / "s" / "x.csv.part"))
    with pytest.raises(InvalidInputError, match="token"):
        DESTINATION.publish(config, str(tmp_path / "elsewhere.csv.part"))
    with pytest.raises(InvalidInputError, match="token"):
        DESTINATION.publish(config, str(tmp_path / "out" / "s" / "x.csv"))


def test_reserved_column_names_and_unsafe_ids_are_refused(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    connector = DESTINATION.open(config, context=context(), started_at=STARTED)
    with pytest.raises(InvalidInputError, match="reserved"):
        connector.deliver(
            RecordBatch(
                operation=Operation.ADD,
                keys=["c1"],
                rows=pa.table({"operation": ["x"]}),
                idempotency_key="ik",
            )
        )
    connector.close(success=False)
    with pytest.raises(InvalidInputError, match="run_id"):
        DESTINATION.open(config, context=context(run_id="../x"), started_at=STARTED)


def test_large_run_streams_many_batches_into_one_parquet_file(tmp_path: Path) -> None:
    config = make_config(tmp_path, format="parquet")
    connector = DESTINATION.open(config, context=context(), started_at=STARTED)
    for start in range(0, 200_000, 50_000):
        keys = [f"k{i:06d}" for i in range(start, start + 50_000)]
        connector.deliver(batch(Operation.ADD, keys, n=pa.array(range(start, start + 50_000))))
    token = connector.stage()
    assert token is not None
    DESTINATION.publish(config, token)
    connector.close(success=True)
    table = pq.read_table(token.removesuffix(".part"))
    assert table.num_rows == 200_000
    assert table.column("n").to_pylist()[-1] == 199_999


def test_capabilities_and_registry() -> None:
    assert DESTINATION_TYPES["file"].capabilities.deferred_publish is True
    assert DESTINATION.capabilities.mirror_as_full_snapshot is True
    assert SyncMode.REMOVE not in DESTINATION.capabilities.modes
    with pytest.raises(InvalidInputError, match="config"):
        DESTINATION.parse_config({"path": "/tmp/x", "format": "parquet", "compression": "gzip"})


def test_check_connection_reports_an_unwritable_directory(tmp_path: Path) -> None:
    assert DESTINATION.check_connection(make_config(tmp_path / "new")).ok
    blocker = tmp_path / "file"
    blocker.write_text("")
    check = DESTINATION.check_connection(make_config(blocker / "sub"))
    assert not check.ok and "cannot write" in check.message
    assert os.listdir(tmp_path / "new") == []  # the probe file is gone
