"""The `file` destination: one file per run in a directory or an fsspec URL (CSV, JSONL, Parquet).

Object storage semantics, as documented for S3-style destinations: it can add, upsert and
mirror (a full snapshot per run), but it cannot remove individual records.

Layout: `<path>/<file_prefix><sync_id>/<UTC yyyymmddTHHMMSSZ>_<run_id>.<csv|jsonl|parquet>[.gz]`
with columns `entity_key`, `operation`, then the mapped fields. A run writes
`<name>.part` while it delivers; `Connector.stage()` finishes it and returns its path (or URL)
as the token; `FileDestination.publish(config, token)` moves it into place. Readers therefore
never see a half-written file, and a file appears exactly once per committed run: the engine
records the token with its snapshot, and re-publishing after a crash is a no-op once the move
happened.

`path` is a local directory or an fsspec URL, validated in the workspace's
`DestinationScope`: a local path (or a `file://` URL, which is one) is resolved inside the
workspace's export directory and stored absolute; any other URL needs a protocol the
operator allows (`s3://bucket/prefix`, given its package, e.g. s3fs). A plain path gets the
strongest guarantees: the part is fsynced and renamed with `os.replace`, and the directory is
fsynced. Through fsspec the part is written with one `open(..., "wb")`, which object stores
commit whole on close, and published with `fs.mv` (a copy and a delete on object stores, so the
final object still appears complete, at once).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gzip
import json
import os
import posixpath
import re
import tempfile
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import IO, Any, Literal

import fsspec
import fsspec.core
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pydantic

from composable_dagster.destinations.base import (
    Capabilities,
    ConnectionCheck,
    Connector,
    DeliveryError,
    DeliveryResult,
    DestinationType,
    RecordBatch,
    SyncContext,
    scope_of,
)
from composable_dagster.errors import InvalidInputError
from composable_dagster.spec.sync import SyncMode

PART_SUFFIX = ".part"
KEY_COLUMN = "entity_key"
OPERATION_COLUMN = "operation"
# Ids become path components: nothing that could climb out of the directory.
_SAFE_ID = re.compile(r"[A-Za-z0-9_.-]+")
_TIMESTAMP_FORMAT = "%Y%m%dT%H%M%SZ"
_URL = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
_CHAINED_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*::")
# fsspec's names of the local filesystem: such URLs are local paths, confined like them.
_LOCAL_PROTOCOLS = frozenset({"file", "local"})


def url_protocol(path: str) -> str | None:
    """The fsspec protocol of `path` (`s3` for `s3://bucket/x`); None for a plain local path."""
    match = _URL.match(path)
    return match.group(1) if match else None


class FileConfig(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    path: str = pydantic.Field(
        min_length=1,
        max_length=1_000,
        description="Directory the files are written to: relative to the workspace's export "
        "directory (or absolute inside it), or an fsspec URL of a protocol the operator allows",
    )
    format: Literal["csv", "jsonl", "parquet"] = "csv"
    compression: Literal["none", "gzip"] = "none"
    file_prefix: str = pydantic.Field(default="", pattern=r"^[A-Za-z0-9_.-]*$")

    @pydantic.field_validator("path")
    @classmethod
    def _confined(cls, value: str, info: pydantic.ValidationInfo) -> str:
        """A local path resolved inside the workspace's export directory; a URL only with a
        protocol the operator allows. Only the filesystem class is looked up: instantiating
        some (sftp, ftp) connects."""
        scope = scope_of(info)
        if _CHAINED_URL.match(value):
            raise ValueError("chained fsspec URLs (`a::b://...`) are not supported")
        protocol = url_protocol(value)
        if protocol in _LOCAL_PROTOCOLS:
            value = fsspec.core.strip_protocol(value)
            protocol = None
        if protocol is None:
            return os.fspath(scope.confine(value))
        if protocol.lower() not in scope.file_protocols:
            allowed = ", ".join(sorted(scope.file_protocols)) or "none"
            raise ValueError(
                f"protocol {protocol!r} is not enabled on this server (allowed: {allowed}; "
                "the operator sets COMPOSABLE_FILE_PROTOCOLS); give a local path instead"
            )
        if not value[len(protocol) + 3 :].strip("/"):
            raise ValueError(f"{value!r} names no bucket or directory")
        try:
            fsspec.get_filesystem_class(protocol)
        except ImportError as err:
            raise ValueError(
                f"protocol {protocol!r} needs a package that is not installed: {err}"
            ) from err
        except ValueError as err:
            raise ValueError(f"unknown fsspec protocol {protocol!r} in {value!r}") from err
        return value

    @pydantic.model_validator(mode="after")
    def _parquet_compresses_itself(self) -> FileConfig:
        if self.format == "parquet" and self.compression == "gzip":
            raise ValueError("gzip applies to csv and jsonl; parquet is compressed internally")
        return self


def run_file_name(config: FileConfig, *, run_id: str, started_at: dt.datetime) -> str:
    """The published file name of a run (without `.part`)."""
    stamp = started_at.astimezone(dt.UTC).strftime(_TIMESTAMP_FORMAT)
    suffix = ".gz" if config.compression == "gzip" else ""
    return f"{stamp}_{run_id}.{config.format}{suffix}"


class _Store(ABC):
    """Where a config's files live; paths are strings in the store's own notation."""

    root: str

    @abstractmethod
    def join(self, directory: str, name: str) -> str: ...

    @abstractmethod
    def makedirs(self, directory: str) -> None: ...

    @abstractmethod
    def part_names(self, directory: str) -> list[str]:
        """Names of the `.part` files directly in `directory` (none if it does not exist)."""

    @abstractmethod
    def open_write(self, path: str) -> IO[bytes]: ...

    @abstractmethod
    def commit(self, raw: IO[bytes]) -> None:
        """Make what was written to `raw` durable and close it."""

    @abstractmethod
    def remove(self, path: str) -> None:
        """Delete the file `path`; nothing happens when it does not exist."""

    @abstractmethod
    def exists(self, path: str) -> bool: ...

    @abstractmethod
    def move(self, source: str, target: str) -> None: ...

    @abstractmethod
    def token(self, path: str) -> str:
        """The string `path` is known by outside the store (tokens, messages)."""

    @abstractmethod
    def path_of_token(self, token: str) -> str | None:
        """The path `token` names, or None when it is not under this store's root."""


class _LocalStore(_Store):
    """A plain directory: parts are fsynced and renamed, and the rename is fsynced."""

    def __init__(self, path: str) -> None:
        self.root = os.fspath(Path(path).expanduser())

    def join(self, directory: str, name: str) -> str:
        return os.fspath(Path(directory) / name)

    def makedirs(self, directory: str) -> None:
        Path(directory).mkdir(parents=True, exist_ok=True)

    def part_names(self, directory: str) -> list[str]:
        return [p.name for p in Path(directory).glob(f"*{PART_SUFFIX}")]

    def open_write(self, path: str) -> IO[bytes]:
        return Path(path).open("wb")

    def commit(self, raw: IO[bytes]) -> None:
        # fsync, so a published file survives a power loss.
        raw.flush()
        os.fsync(raw.fileno())
        raw.close()

    def remove(self, path: str) -> None:
        Path(path).unlink(missing_ok=True)

    def exists(self, path: str) -> bool:
        return Path(path).exists()

    def move(self, source: str, target: str) -> None:
        os.replace(source, target)
        _fsync_directory(Path(target).parent)

    def token(self, path: str) -> str:
        return path

    def path_of_token(self, token: str) -> str | None:
        part = Path(token)
        if not part.resolve().is_relative_to(Path(self.root).resolve()):
            return None
        return os.fspath(part)


class _FsspecStore(_Store):
    """An fsspec filesystem; object stores commit an object whole when its writer closes."""

    def __init__(self, url: str) -> None:
        self.fs, root = fsspec.core.url_to_fs(url)
        # Object keys are not paths: `a/../b` would be a literal key. Normalising makes the
        # root mean what it says and lets `publish` compare tokens with it.
        self.root = posixpath.normpath(root)
        protocols = self.fs.protocol
        self.protocols = {protocols} if isinstance(protocols, str) else set(protocols)

    def join(self, directory: str, name: str) -> str:
        return f"{directory.rstrip('/')}/{name}"

    def makedirs(self, directory: str) -> None:
        self.fs.makedirs(directory, exist_ok=True)

    def part_names(self, directory: str) -> list[str]:
        # `ls`, not `glob`: the root may contain glob characters.
        self.fs.invalidate_cache(directory)  # listings are cached (s3fs) and ours just changed
        try:
            entries = self.fs.ls(directory, detail=True)
        except FileNotFoundError:
            return []  # object stores have no empty directories
        names = (posixpath.basename(e["name"]) for e in entries if e["type"] == "file")
        return [name for name in names if name.endswith(PART_SUFFIX)]

    def open_write(self, path: str) -> IO[bytes]:
        return self.fs.open(path, "wb")

    def commit(self, raw: IO[bytes]) -> None:
        raw.close()  # uploads the object (or its last part) and makes it visible

    def remove(self, path: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm(path)

    def exists(self, path: str) -> bool:
        self.fs.invalidate_cache(path)
        return bool(self.fs.exists(path))

    def move(self, source: str, target: str) -> None:
        self.fs.mv(source, target)

    def token(self, path: str) -> str:
        return self.fs.unstrip_protocol(path)

    def path_of_token(self, token: str) -> str | None:
        if url_protocol(token) not in self.protocols:
            return None
        path = posixpath.normpath(fsspec.core.strip_protocol(token))
        if not PurePosixPath(path).is_relative_to(self.root):
            return None
        return path


def _store_for(config: FileConfig) -> _Store:
    if url_protocol(config.path) is None:
        return _LocalStore(config.path)
    return _FsspecStore(config.path)


class _RowWriter:
    """Streams Arrow tables into one file; the first table fixes the schema."""

    def __init__(
        self,
        *,
        raw: IO[bytes],
        commit: Callable[[IO[bytes]], None],
        config: FileConfig,
        schema: pa.Schema,
    ) -> None:
        self.schema = schema
        self._format = config.format
        self._raw = raw
        self._commit = commit
        self._sink: IO[bytes] = (
            gzip.GzipFile(filename="", fileobj=self._raw, mode="wb", mtime=0)
            if config.compression == "gzip"
            else self._raw
        )
        self._csv: pa_csv.CSVWriter | None = None
        self._parquet: pq.ParquetWriter | None = None
        if self._format == "csv":
            self._csv = pa_csv.CSVWriter(self._sink, schema)
        elif self._format == "parquet":
            self._parquet = pq.ParquetWriter(self._sink, schema)

    def write(self, table: pa.Table) -> None:
        if self._csv is not None:
            self._csv.write_table(table)
        elif self._parquet is not None:
            self._parquet.write_table(table)
        else:
            lines = (json.dumps(row, default=_json_default) for row in table.to_pylist())
            self._sink.write("".join(f"{line}\n" for line in lines).encode("utf-8"))

    def finish(self) -> None:
        """Flush every layer, then commit the file (fsync, or the object store's upload)."""
        if self._csv is not None:
            self._csv.close()
        if self._parquet is not None:
            self._parquet.close()
        if self._sink is not self._raw:
            self._sink.close()
        self._commit(self._raw)

    def abandon(self) -> None:
        for closer in (self._csv, self._parquet):
            if closer is not None:
                # The file is deleted next; its content no longer matters.
                with contextlib.suppress(OSError, pa.ArrowException):
                    closer.close()
        self._raw.close()


def _json_default(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    return str(value)  # Decimal, timedelta: their text is exact


class FileConnector(Connector):
    """Writes one run's batches into a single `.part` file; see the module docstring."""

    def __init__(
        self, *, config: FileConfig, context: SyncContext, started_at: dt.datetime
    ) -> None:
        for name, value in (("sync_id", context.sync_id), ("run_id", context.run_id)):
            if _SAFE_ID.fullmatch(value) is None or value in {".", ".."}:
                raise InvalidInputError(name, f"{value!r} cannot be part of a file name")
        self.config = config
        self.context = context
        self._store = _store_for(config)
        self.directory = self._store.join(
            self._store.root, f"{config.file_prefix}{context.sync_id}"
        )
        self.part_name = (
            run_file_name(config, run_id=context.run_id, started_at=started_at) + PART_SUFFIX
        )
        self.part_path = self._store.join(self.directory, self.part_name)
        self._writer: _RowWriter | None = None
        self._staged = False
        self._store.makedirs(self.directory)
        self._remove_orphans()

    def _remove_orphans(self) -> None:
        # The engine publishes pending tokens before it opens a new connector and runs of one
        # sync never overlap, so an older .part left here belongs to a run that failed or
        # crashed before committing: nobody will ever publish it.
        # Names start with the run's UTC timestamp, so comparing the prefix compares start times.
        ours = self.part_name[: len("yyyymmddTHHMMSSZ")]
        for name in self._store.part_names(self.directory):
            if name != self.part_name and name[: len(ours)] <= ours:
                self._store.remove(self._store.join(self.directory, name))

    def _open_writer(self, schema: pa.Schema) -> _RowWriter:
        return _RowWriter(
            raw=self._store.open_write(self.part_path),
            commit=self._store.commit,
            config=self.config,
            schema=schema,
        )

    def deliver(self, batch: RecordBatch) -> DeliveryResult:
        if self._staged:
            raise RuntimeError("deliver() after stage(): the run's file is already staged")
        table = _with_key_and_operation(batch)
        try:
            if self._writer is None:
                self._writer = self._open_writer(table.schema)
            elif table.schema != self._writer.schema:
                # Batches of one run share the mapping; only nullness-driven types differ.
                table = table.cast(self._writer.schema)
            self._writer.write(table)
        except (OSError, pa.ArrowException) as err:
            raise DeliveryError(f"file {self._store.token(self.part_path)}", str(err)) from err
        return DeliveryResult(confirmed=list(batch.keys))

    def stage(self) -> str | None:
        """Finish the part file; its path (its URL for fsspec paths) is the token for `publish`.

        A run that delivered nothing stages no file, except in mirror mode, where an empty
        file is the (empty) snapshot of the audience.
        """
        try:
            if self._writer is None:
                if self.context.mode is not SyncMode.MIRROR:
                    self._staged = True
                    return None
                self._writer = self._open_writer(
                    pa.schema([(KEY_COLUMN, pa.string()), (OPERATION_COLUMN, pa.string())])
                )
            self._writer.finish()
        except OSError as err:
            raise DeliveryError(f"file {self._store.token(self.part_path)}", str(err)) from err
        self._staged = True
        return self._store.token(self.part_path)

    def close(self, *, success: bool) -> None:
        """Discard the part file unless it was staged and the run succeeded.

        The engine passes `success=False` only when its snapshot (and thus the token) was not
        committed, so the part can never be published and is removed. A published part no
        longer exists, so nothing visible is ever deleted here.
        """
        if self._writer is not None and not self._staged:
            self._writer.abandon()
        if not (success and self._staged):
            self._store.remove(self.part_path)


def _with_key_and_operation(batch: RecordBatch) -> pa.Table:
    rows = batch.rows
    for reserved in (KEY_COLUMN, OPERATION_COLUMN):
        if reserved in rows.column_names:
            raise InvalidInputError(
                "field_mapping", f"destination field {reserved!r} is reserved by file output"
            )
    keys = pa.array(batch.keys, type=pa.string())
    operations = pa.repeat(pa.scalar(str(batch.operation), pa.string()), len(keys))
    return rows.add_column(0, KEY_COLUMN, keys).add_column(1, OPERATION_COLUMN, operations)


class FileDestination(DestinationType):
    name = "file"
    config_model = FileConfig
    url_fields = ("path",)  # sftp://user:password@host/dir
    capabilities = Capabilities(
        modes=frozenset({SyncMode.ADD, SyncMode.UPSERT, SyncMode.MIRROR}),
        batch_size=100_000,
        mirror_as_full_snapshot=True,
        deferred_publish=True,
    )

    def target(self, config: pydantic.BaseModel) -> tuple[str, ...]:
        """The directory and the file names; format and compression are how, not where."""
        assert isinstance(config, FileConfig)
        return (config.path, config.file_prefix)

    def check_connection(self, config: pydantic.BaseModel) -> ConnectionCheck:
        assert isinstance(config, FileConfig)
        if url_protocol(config.path) is not None:
            return _check_url(config.path)
        directory = Path(config.path).expanduser()
        try:
            directory.mkdir(parents=True, exist_ok=True)
            # A real write proves permissions and free space better than os.access.
            with tempfile.NamedTemporaryFile(dir=directory, prefix=".composable-check-"):
                pass
        except OSError as err:
            return ConnectionCheck(ok=False, message=f"cannot write to {directory}: {err.strerror}")
        return ConnectionCheck(ok=True, message=f"{os.fspath(directory)} is writable")

    def open(
        self,
        config: pydantic.BaseModel,
        *,
        context: SyncContext,
        started_at: dt.datetime | None = None,
    ) -> FileConnector:
        """A connector writing the run's file; `started_at` (default now) names it."""
        assert isinstance(config, FileConfig)
        return FileConnector(
            config=config, context=context, started_at=started_at or dt.datetime.now(dt.UTC)
        )

    def publish(self, config: pydantic.BaseModel, token: str) -> None:
        """Move the staged part `token` to its final name; a no-op once that happened."""
        assert isinstance(config, FileConfig)
        store = _store_for(config)
        part = store.path_of_token(token)
        if part is None or PurePosixPath(part).suffix != PART_SUFFIX:
            raise InvalidInputError("token", f"{token!r} is not a part file under {config.path}")
        final = part.removesuffix(PART_SUFFIX)
        if store.exists(part):
            store.move(part, final)
        elif not store.exists(final):
            raise DeliveryError(
                f"file {store.token(final)}",
                "neither the staged part nor the published file exists",
            )


def _check_url(url: str) -> ConnectionCheck:
    try:
        store = _FsspecStore(url)
        store.makedirs(store.root)
        probe = store.join(store.root, f".composable-check-{uuid.uuid4().hex}")
        with store.open_write(probe) as handle:
            handle.write(b"probe")
        store.remove(probe)
    # fsspec backends raise their own types (botocore, aiohttp, paramiko); a check reports
    # the failure instead of raising it.
    except Exception as err:
        return ConnectionCheck(
            ok=False, message=f"cannot write to {url}: {type(err).__name__}: {err}"
        )
    return ConnectionCheck(ok=True, message=f"{url} is writable")


def _fsync_directory(directory: Path) -> None:
    # The rename is durable only once the directory entry is on disk.
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
