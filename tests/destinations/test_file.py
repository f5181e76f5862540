"""The file destination: one part file per run, published by rename, read back for real."""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import io
import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fsspec.registry import known_implementations
from fsspec.spec import AbstractFileSystem

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
from tests.scopes import ANYWHERE

STARTED = dt.datetime(2024, 6, 15, 8, 30, 5, tzinfo=dt.UTC)
DESTINATION = FileDestination()


def make_config(path: Path | str, **overrides: object) -> FileConfig:
    config = DESTINATION.parse_config({"path": str(path), **overrides}, scope=ANYWHERE)
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
    return parse_rows(path.read_bytes(), fmt=fmt, gzipped=path.suffix == ".gz")


def parse_rows(raw: bytes, *, fmt: str, gzipped: bool) -> list[dict]:
    if gzipped:
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
        DESTINATION.parse_config(
            {"path": "/tmp/x", "format": "parquet", "compression": "gzip"}, scope=ANYWHERE
        )


def test_check_connection_reports_an_unwritable_directory(tmp_path: Path) -> None:
    assert DESTINATION.check_connection(make_config(tmp_path / "new")).ok
    blocker = tmp_path / "file"
    blocker.write_text("")
    check = DESTINATION.check_connection(make_config(blocker / "sub"))
    assert not check.ok and "cannot write" in check.message
    assert os.listdir(tmp_path / "new") == []  # the probe file is gone


# fsspec URLs: the in-process `memory://` filesystem (a `file://` URL is a local path, confined
# to the export directory like one: tests/security/test_destination_confinement.py).


@dataclass(frozen=True)
class UrlRoot:
    url: str  # what the config says
    fs: AbstractFileSystem
    path: str  # the same place as the filesystem names it

    def sync_dir(self) -> str:
        return f"{self.path}/sync-7"


@pytest.fixture
def url_root() -> Iterator[UrlRoot]:
    # The memory filesystem is one dict per process: a unique top level, removed afterwards.
    top = f"composable-test-{uuid.uuid4().hex}"
    memory = fsspec.filesystem("memory")
    yield UrlRoot(f"memory://{top}/out", memory, f"/{top}/out")
    if memory.exists(f"/{top}"):
        memory.rm(f"/{top}", recursive=True)


@pytest.mark.parametrize(
    ("fmt", "compression"), [("csv", "none"), ("jsonl", "gzip"), ("parquet", "none")]
)
def test_url_run_is_staged_then_moved_into_place(
    url_root: UrlRoot, tmp_path: Path, fmt: str, compression: str
) -> None:
    config = make_config(url_root.url, format=fmt, compression=compression)
    connector = DESTINATION.open(config, context=context(), started_at=STARTED)
    connector.deliver(ADDS)
    connector.deliver(UPDATES)
    token = connector.stage()
    assert token is not None

    suffix = ".gz" if compression == "gzip" else ""
    final = f"{url_root.sync_dir()}/20240615T083005Z_run-1.{fmt}{suffix}"
    assert token == url_root.fs.unstrip_protocol(f"{final}.part")
    assert url_root.fs.ls(url_root.sync_dir(), detail=False) == [f"{final}.part"]

    DESTINATION.publish(config, token)
    DESTINATION.publish(config, token)  # recovery re-publish: a no-op
    connector.close(success=True)
    assert url_root.fs.ls(url_root.sync_dir(), detail=False) == [final]

    raw = url_root.fs.cat_file(final)
    assert raw.startswith(b"\x1f\x8b") == (compression == "gzip")
    rows = parse_rows(raw, fmt=fmt, gzipped=compression == "gzip")
    assert [r["entity_key"] for r in rows] == ["c1", "c2", "c3", "c4"]
    assert [r["operation"] for r in rows] == ["add", "add", "add", "update"]
    assert [r["city"] for r in rows] == ["Zürich", 'naïve, "quoted"', "line\nbreak", "Oslo"]
    if url_root.url.startswith("file://"):  # the URL reached the real disk
        assert (tmp_path / "out" / "sync-7" / Path(final).name).is_file()


@pytest.mark.parametrize("staged", [False, True])
def test_failed_url_run_leaves_nothing(url_root: UrlRoot, staged: bool) -> None:
    config = make_config(url_root.url, format="parquet")
    connector = DESTINATION.open(config, context=context(), started_at=STARTED)
    connector.deliver(ADDS)
    if staged:  # staged, but the engine's snapshot commit failed
        token = connector.stage()
        assert token is not None and url_root.fs.ls(url_root.sync_dir(), detail=False)
    connector.close(success=False)
    assert url_root.fs.ls(url_root.sync_dir(), detail=False) == []


def test_url_crash_before_publish_is_recovered_by_publishing_the_token(
    url_root: UrlRoot,
) -> None:
    config = make_config(url_root.url, format="jsonl")
    connector = DESTINATION.open(config, context=context(), started_at=STARTED)
    connector.deliver(ADDS)
    token = connector.stage()
    assert token is not None
    # The process dies here: no publish, no close. Recovery publishes the committed token
    # (twice, to be sure it is idempotent); the next run must keep the published file.
    DESTINATION.publish(config, token)
    DESTINATION.publish(config, token)
    later = STARTED + dt.timedelta(hours=1)
    next_run = DESTINATION.open(config, context=context(run_id="run-2"), started_at=later)
    next_run.deliver(UPDATES)
    DESTINATION.publish(config, next_run.stage() or "")
    next_run.close(success=True)
    names = sorted(p.rsplit("/", 1)[1] for p in url_root.fs.ls(url_root.sync_dir(), detail=False))
    assert names == ["20240615T083005Z_run-1.jsonl", "20240615T093005Z_run-2.jsonl"]
    first = parse_rows(
        url_root.fs.cat_file(f"{url_root.sync_dir()}/{names[0]}"), fmt="jsonl", gzipped=False
    )
    assert [r["entity_key"] for r in first] == ["c1", "c2", "c3"]

    url_root.fs.rm(f"{url_root.sync_dir()}/{names[0]}")  # neither part nor file exists now
    with pytest.raises(DeliveryError, match="neither the staged part nor the published file"):
        DESTINATION.publish(config, token)


def test_url_open_removes_orphaned_parts_of_earlier_runs_only(url_root: UrlRoot) -> None:
    fs, directory = url_root.fs, url_root.sync_dir()
    fs.makedirs(directory, exist_ok=True)
    orphan = f"{directory}/20240615T080000Z_run-0.csv.part"
    published = f"{directory}/20240615T080000Z_run-00.csv"
    later = f"{directory}/20240615T090000Z_run-9.csv.part"  # a clock ahead: not ours to judge
    other_sync = f"{url_root.path}/sync-8/20240615T080000Z_run-0.csv.part"
    fs.makedirs(f"{url_root.path}/sync-8", exist_ok=True)
    for path in (orphan, published, later, other_sync):
        fs.pipe_file(path, b"entity_key,operation\n")

    config = make_config(url_root.url)
    connector = DESTINATION.open(config, context=context(), started_at=STARTED)
    assert not fs.exists(orphan)
    assert fs.exists(published) and fs.exists(later) and fs.exists(other_sync)
    connector.close(success=False)


def test_url_publish_refuses_tokens_outside_the_root() -> None:
    top = f"composable-test-{uuid.uuid4().hex}"
    memory = fsspec.filesystem("memory")
    config = make_config(f"memory://{top}/out")
    outside = f"/{top}/elsewhere.csv.part"
    memory.pipe_file(outside, b"not ours")
    try:
        for token in (
            f"memory://{outside}",
            f"memory:///{top}/out/../elsewhere.csv.part",  # climbs out once normalised
            f"file:///{top}/out/s/x.csv.part",  # another protocol
            f"/{top}/out/s/x.csv.part",  # a plain path
            f"memory:///{top}/out/s/x.csv",  # not a part
        ):
            with pytest.raises(InvalidInputError, match="token"):
                DESTINATION.publish(config, token)
        assert memory.cat_file(outside) == b"not ours"
        assert not memory.exists(f"/{top}/elsewhere.csv")
        with pytest.raises(DeliveryError, match="neither the staged part"):
            DESTINATION.publish(config, f"memory:///{top}/out/s/x.csv.part")
    finally:
        memory.rm(f"/{top}", recursive=True)


def test_unknown_or_unavailable_protocols_are_refused_at_parse_config(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A protocol fsspec knows whose package is missing (as s3fs is for s3:// here), made
    # certain by registering one that points at a module that does not exist.
    monkeypatch.setitem(
        known_implementations,
        "absentfs",
        {"class": "absentfs_pkg.AbsentFileSystem", "err": "Install absentfs_pkg to use absentfs"},
    )
    cases = [
        ("nosuchproto://bucket/out", "nosuchproto"),
        ("simplecache::memory://bucket/out", "chained"),
        ("memory://", "no bucket"),
        ("absentfs://bucket/out", "absentfs_pkg"),
    ]
    for path, named in cases:
        with pytest.raises(InvalidInputError, match=named) as refused:
            DESTINATION.parse_config({"path": path}, scope=ANYWHERE)
        assert refused.value.field == "config.path"
        assert str(refused.value).startswith("config.path: ")
    # A colon-slash-slash later in a plain path is no URL (the path comes back normalised).
    assert make_config("/srv/a://b").path == "/srv/a:/b"


def test_url_rejects_unsafe_ids(url_root: UrlRoot) -> None:
    config = make_config(url_root.url)
    with pytest.raises(InvalidInputError, match="sync_id"):
        DESTINATION.open(
            config,
            context=SyncContext(sync_id="..", run_id="r", mode=SyncMode.ADD),
            started_at=STARTED,
        )
    assert not url_root.fs.exists(url_root.path) or url_root.fs.ls(url_root.path) == []


def test_check_connection_on_urls(url_root: UrlRoot) -> None:
    check = DESTINATION.check_connection(make_config(url_root.url))
    assert check.ok, check.message
    assert url_root.fs.ls(url_root.path, detail=False) == []  # the probe object is gone
    url_root.fs.pipe_file(f"{url_root.path}/blocker", b"")
    check = DESTINATION.check_connection(make_config(f"{url_root.url}/blocker/sub"))
    assert not check.ok
    assert check.message.startswith(f"cannot write to {url_root.url}/blocker/sub: ")
