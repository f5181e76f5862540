"""The `file` destination: one file per run in a local directory (CSV, JSONL or Parquet).

Object storage semantics, as documented for S3-style destinations: it can add, upsert and
mirror (a full snapshot per run), but it cannot remove individual records.

Layout: `<path>/<file_prefix><sync_id>/<UTC yyyymmddTHHMMSSZ>_<run_id>.<csv|jsonl|parquet>[.gz]`
with columns `entity_key`, `operation`, then the mapped fields. A run writes
`<name>.part` while it delivers; `Connector.stage()` flushes and fsyncs it and returns its
path as the token; `FileDestination.publish(config, token)` renames it into place. Readers
therefore never see a half-written file, and a file appears exactly once per committed run:
the engine records the token with its snapshot, and re-publishing after a crash is a no-op
once the rename happened.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gzip
import json
import os
import re
import tempfile
from pathlib import Path
from typing import IO, Any, Literal

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
    SyncMode,
)
from composable_dagster.errors import InvalidInputError

PART_SUFFIX = ".part"
KEY_COLUMN = "entity_key"
OPERATION_COLUMN = "operation"
# Ids become path components: nothing that could climb out of the directory.
_SAFE_ID = re.compile(r"[A-Za-z0-9_.-]+")
_TIMESTAMP_FORMAT = "%Y%m%dT%H%M%SZ"


class FileConfig(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    path: str = pydantic.Field(min_length=1, description="Directory the files are written to")
    format: Literal["csv", "jsonl", "parquet"] = "csv"
    compression: Literal["none", "gzip"] = "none"
    file_prefix: str = pydantic.Field(default="", pattern=r"^[A-Za-z0-9_.-]*$")

    @pydantic.model_validator(mode="after")
    def _parquet_compresses_itself(self) -> FileConfig:
        if self.format == "parquet" and self.compression == "gzip":
            raise ValueError("gzip applies to csv and jsonl; parquet is compressed internally")
        return self


def sync_directory(config: FileConfig, sync_id: str) -> Path:
    """The directory holding every file of one sync."""
    return Path(config.path).expanduser() / f"{config.file_prefix}{sync_id}"


def run_file_name(config: FileConfig, *, run_id: str, started_at: dt.datetime) -> str:
    """The published file name of a run (without `.part`)."""
    stamp = started_at.astimezone(dt.UTC).strftime(_TIMESTAMP_FORMAT)
    suffix = ".gz" if config.compression == "gzip" else ""
    return f"{stamp}_{run_id}.{config.format}{suffix}"


class _RowWriter:
    """Streams Arrow tables into one file; the first table fixes the schema."""

    def __init__(self, *, path: Path, config: FileConfig, schema: pa.Schema) -> None:
        self.schema = schema
        self._format = config.format
        self._raw: IO[bytes] = path.open("wb")
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
        """Flush every layer and fsync, so a published file survives a power loss."""
        if self._csv is not None:
            self._csv.close()
        if self._parquet is not None:
            self._parquet.close()
        if self._sink is not self._raw:
            self._sink.close()
        self._raw.flush()
        os.fsync(self._raw.fileno())
        self._raw.close()

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
        self.directory = sync_directory(config, context.sync_id)
        self.final_path = self.directory / run_file_name(
            config, run_id=context.run_id, started_at=started_at
        )
        self.part_path = self.final_path.with_name(self.final_path.name + PART_SUFFIX)
        self._writer: _RowWriter | None = None
        self._staged = False
        self.directory.mkdir(parents=True, exist_ok=True)
        self._remove_orphans()

    def _remove_orphans(self) -> None:
        # The engine publishes pending tokens before it opens a new connector and runs of one
        # sync never overlap, so an older .part left here belongs to a run that failed or
        # crashed before committing: nobody will ever publish it.
        # Names start with the run's UTC timestamp, so comparing the prefix compares start times.
        ours = self.part_path.name[: len("yyyymmddTHHMMSSZ")]
        for part in self.directory.glob(f"*{PART_SUFFIX}"):
            if part != self.part_path and part.name[: len(ours)] <= ours:
                part.unlink(missing_ok=True)

    def deliver(self, batch: RecordBatch) -> DeliveryResult:
        if self._staged:
            raise RuntimeError("deliver() after stage(): the run's file is already staged")
        table = _with_key_and_operation(batch)
        try:
            if self._writer is None:
                self._writer = _RowWriter(
                    path=self.part_path, config=self.config, schema=table.schema
                )
            elif table.schema != self._writer.schema:
                # Batches of one run share the mapping; only nullness-driven types differ.
                table = table.cast(self._writer.schema)
            self._writer.write(table)
        except (OSError, pa.ArrowException) as err:
            raise DeliveryError(f"file {self.part_path}", str(err)) from err
        return DeliveryResult(confirmed=list(batch.keys))

    def stage(self) -> str | None:
        """Close and fsync the part file; its path is the token for `publish`.

        A run that delivered nothing stages no file, except in mirror mode, where an empty
        file is the (empty) snapshot of the audience.
        """
        if self._writer is None:
            if self.context.mode is not SyncMode.MIRROR:
                self._staged = True
                return None
            schema = pa.schema([(KEY_COLUMN, pa.string()), (OPERATION_COLUMN, pa.string())])
            self._writer = _RowWriter(path=self.part_path, config=self.config, schema=schema)
        try:
            self._writer.finish()
        except OSError as err:
            raise DeliveryError(f"file {self.part_path}", str(err)) from err
        self._staged = True
        return str(self.part_path)

    def close(self, *, success: bool) -> None:
        """Discard the part file unless it was staged and the run succeeded.

        The engine passes `success=False` only when its snapshot (and thus the token) was not
        committed, so the part can never be published and is removed. A published part no
        longer exists, so nothing visible is ever deleted here.
        """
        if self._writer is not None and not self._staged:
            self._writer.abandon()
        if not (success and self._staged):
            self.part_path.unlink(missing_ok=True)


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
    capabilities = Capabilities(
        modes=frozenset({SyncMode.ADD, SyncMode.UPSERT, SyncMode.MIRROR}),
        batch_size=100_000,
        mirror_as_full_snapshot=True,
        deferred_publish=True,
    )

    def check_connection(self, config: pydantic.BaseModel) -> ConnectionCheck:
        assert isinstance(config, FileConfig)
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
        """Rename the staged part `token` to its final name; a no-op once that happened."""
        assert isinstance(config, FileConfig)
        part = Path(token)
        root = Path(config.path).expanduser().resolve()
        if part.suffix != PART_SUFFIX or not part.resolve().is_relative_to(root):
            raise InvalidInputError("token", f"{token!r} is not a part file under {root}")
        final = part.with_name(part.name.removesuffix(PART_SUFFIX))
        if part.exists():
            os.replace(part, final)
            _fsync_directory(final.parent)
        elif not final.exists():
            raise DeliveryError(
                f"file {final}", "neither the staged part nor the published file exists"
            )


def _fsync_directory(directory: Path) -> None:
    # The rename is durable only once the directory entry is on disk.
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
