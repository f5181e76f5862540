"""What every destination type declares: its config, its capabilities, a connection test.

The delivery contract between the sync engine and a connector, per run:

1. `conn = dest_type.open(config, context=SyncContext(...))`;
2. `conn.deliver(batch)` for each `RecordBatch` of the diff (one operation per batch);
3. `token = conn.stage()` after the last batch of a successful run;
4. the engine commits its snapshot (for `deferred_publish` destinations: once, here, with
   `token` recorded in the same transaction);
5. `dest_type.publish(config, token)` when `token` is not None;
6. `conn.close(success=...)`, always.

Keys a connector reports in `DeliveryResult.confirmed` are committed by the engine right after
`deliver` returns (for destinations without deferred publication), so "confirmed" must mean
"durably applied by the destination". Per-record rejections go to `DeliveryResult.failed`;
a connector raises `DeliveryError` only when the whole destination fails after its retries,
and the run then stops. A connector that sent part of the batch before it failed says which
keys were confirmed (`DeliveryError.confirmed`): the engine commits those too, so a later
run never sends them again.

A batch holds at most `DestinationType.batch_size(config)` rows: one request's worth.
"""

from __future__ import annotations

import enum
import os
import re
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa
import pydantic

from composable_dagster.errors import InvalidInputError
from composable_dagster.settings import Settings
from composable_dagster.spec.sync import SyncMode


class Operation(enum.StrEnum):
    ADD = "add"
    UPDATE = "update"
    REMOVE = "remove"


@dataclass(frozen=True, slots=True)
class Capabilities:
    modes: frozenset[SyncMode]
    batch_size: int
    requests_per_second: float | None = None  # None: no rate limit of the destination's own
    # True for file-like destinations that cannot remove single records: in mirror mode
    # they receive every current member each run (as ADD batches) and replace their copy.
    mirror_as_full_snapshot: bool = False
    # True when delivered records only become visible at `DestinationType.publish` (a file
    # renamed into place): the engine commits its snapshot once, after `Connector.stage()`,
    # recording the returned token in the same transaction, and publishes afterwards.
    deferred_publish: bool = False


# What a workspace slug may be: it names the workspace's export directory (and the first
# part of its Dagster asset keys).
WORKSPACE_SLUG = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")


@dataclass(frozen=True, slots=True)
class DestinationScope:
    """Where one workspace's destinations may write on this server.

    Set by the operator (Settings: `COMPOSABLE_EXPORT_ROOT`, `COMPOSABLE_FILE_PROTOCOLS`),
    never by a tenant: local files (and file databases such as SQLite) live under
    `<export_root>/<workspace slug>/`, and fsspec URLs may use only `file_protocols`.
    """

    export_root: Path
    workspace_slug: str
    file_protocols: frozenset[str] = frozenset()

    @classmethod
    def for_workspace(cls, settings: Settings, workspace_slug: str) -> DestinationScope:
        """The scope the operator's settings give the workspace `workspace_slug`."""
        return cls(
            export_root=settings.resolved_export_root,
            workspace_slug=workspace_slug,
            file_protocols=settings.allowed_file_protocols,
        )

    @property
    def export_dir(self) -> Path:
        # Checked here, not at construction: a workspace with an odd slug (made before slugs
        # were checked) can still load its definitions; it just cannot write local files.
        if WORKSPACE_SLUG.fullmatch(self.workspace_slug) is None:
            raise ValueError(f"workspace slug {self.workspace_slug!r} cannot name a directory")
        return Path(os.path.realpath(self.export_root)) / self.workspace_slug

    def confine(self, path: str) -> Path:
        """`path` (relative to the export directory, or absolute) resolved, symlinks
        included; ValueError when it leaves the workspace's export directory."""
        export_dir = self.export_dir
        # No `~` expansion: a tenant's path is never relative to the server user's home.
        resolved = Path(os.path.realpath(export_dir / path))
        if resolved.is_relative_to(export_dir):
            return resolved
        root = Path(os.path.realpath(self.export_root))
        if resolved.is_relative_to(root) and resolved != root:
            raise ValueError(f"{path!r} is in another workspace's export directory")
        raise ValueError(
            f"{path!r} is outside this workspace's export directory {export_dir} "
            "(give a path relative to it)"
        )


def scope_of(info: pydantic.ValidationInfo) -> DestinationScope:
    """The scope `DestinationType.parse_config` validates a config in."""
    scope = (info.context or {}).get("scope")
    if not isinstance(scope, DestinationScope):
        raise TypeError("destination configs are validated with parse_config(raw, scope=...)")
    return scope


@dataclass(frozen=True, slots=True)
class SyncContext:
    """What a connector knows about the run it delivers for."""

    sync_id: str
    run_id: str
    mode: SyncMode
    # Destination fields whose values the engine hashed (SHA-256) before delivery.
    hashed_fields: frozenset[str] = frozenset()
    # Destination fields of the mapping, in order (the columns of every batch's `rows`).
    # Connectors with a schema check it at `open` (empty: unknown, checked at the first batch).
    fields: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RecordBatch:
    """One batch of changes of a single operation, ordered by key.

    `rows` has one column per destination field of the field mapping, in mapping order
    (values already normalised/hashed where the mapping asks); `keys[i]` is the entity key
    of `rows` row i. REMOVE batches carry the last delivered values of the removed rows.
    `idempotency_key` is derived from (sync, run, operation, batch number): every attempt
    to send this batch carries it, and no other batch, of this run or a later one, does.
    """

    operation: Operation
    keys: Sequence[str]
    rows: pa.Table
    idempotency_key: str


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    """Which keys of a batch the destination confirmed, and why the others failed."""

    confirmed: Sequence[str]
    failed: Mapping[str, str] = field(default_factory=dict)


class DeliveryError(Exception):
    """The whole destination failed (after retries); the message names it and the cause.

    `confirmed` and `failed`: what the destination confirmed and rejected of the batch
    before it failed (a connector that sends a batch in parts), as in `DeliveryResult`.
    """

    def __init__(
        self,
        destination: str,
        cause: str,
        *,
        confirmed: Sequence[str] = (),
        failed: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(f"destination {destination}: {cause}")
        self.destination = destination
        self.cause = cause
        self.confirmed = tuple(confirmed)
        self.failed = dict(failed or {})


class Connector(ABC):
    """An open connection to a destination for one run (see the module docstring).

    Keys in `DeliveryResult.confirmed` are durably applied when `deliver` returns: the engine
    commits them to its snapshot straight away (unless the type has `deferred_publish`).
    """

    @abstractmethod
    def deliver(self, batch: RecordBatch) -> DeliveryResult:
        """Send one batch; never raise for per-record rejections (report them as failed).

        Keys returned as confirmed are durably applied. Raise (DeliveryError, or
        InvalidInputError when the destination's schema contradicts the config) only for
        failures of the whole destination after retries are exhausted; the engine then stops
        the run and commits nothing of the failed batch.
        """

    def stage(self) -> str | None:
        """Finish writing after the last batch of a successful run.

        Returns a token for deferred publication (file destinations: the path of the written
        part file), which the engine stores with its snapshot and passes to
        `DestinationType.publish`; None when delivered records are already visible.
        """
        return None

    def close(self, *, success: bool) -> None:  # noqa: B027 - most connectors hold nothing
        """Release resources; `success` is False when the run failed (discard staged output).

        Called after `publish`, so it must not undo output that was already published.
        """


@dataclass(frozen=True, slots=True)
class ConnectionCheck:
    ok: bool
    message: str


class DestinationType(ABC):
    """One kind of destination. Subclasses are stateless; config arrives as validated models."""

    name: ClassVar[str]
    config_model: ClassVar[type[pydantic.BaseModel]]
    capabilities: ClassVar[Capabilities]
    # Where the config's secrets are (destinations/secrets.py): keys whose value is a secret
    # ("signing_secret", or "headers.*" for every value of a mapping), and keys holding a URL
    # whose password and secret query parameters are secrets.
    secret_fields: ClassVar[tuple[str, ...]] = ()
    url_fields: ClassVar[tuple[str, ...]] = ()
    # How the URLs' consumer splits them: "rfc3986" (HTTP clients, fsspec) or "sqlalchemy".
    url_syntax: ClassVar[str] = "rfc3986"

    def parse_config(
        self, raw: Mapping[str, Any], *, scope: DestinationScope
    ) -> pydantic.BaseModel:
        """Validate `raw` for a workspace's `scope`; errors name the field as `config.<field>`.

        Paths are resolved in the scope (a local path comes back absolute, inside the
        workspace's export directory), so a stored config always says where it writes.
        """
        try:
            return self.config_model.model_validate(dict(raw), context={"scope": scope})
        except pydantic.ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            field = f"config.{where}" if where else "config"
            # A validator's own message reads better without pydantic's "Value error, ".
            cause = first.get("ctx", {}).get("error") if first["type"] == "value_error" else None
            raise InvalidInputError(field, str(cause) if cause else first["msg"]) from err

    @abstractmethod
    def check_connection(self, config: pydantic.BaseModel) -> ConnectionCheck:
        """Reach the destination with `config` and say whether it accepts writes."""

    @abstractmethod
    def open(self, config: pydantic.BaseModel, *, context: SyncContext) -> Connector:
        """A connector delivering one run's batches."""

    def target(self, config: pydantic.BaseModel) -> tuple[str, ...]:
        """The parts of `config` that say where members land (stored only as a hash).

        When they change, the place holds none of what the sync delivered before, so the
        engine starts its snapshot from nothing and every member is sent again. Settings of
        how to deliver (batch size, headers, timeouts) are left out: changing them resends
        nothing. The default, the whole config, errs on the side of resending.
        """
        return (config.model_dump_json(),)

    def batch_size(self, config: pydantic.BaseModel) -> int:
        """The most rows a `RecordBatch` for `config` holds: what one request may carry (a
        sync's own `batch_size` may lower it, never raise it)."""
        return self.capabilities.batch_size

    def publish(self, config: pydantic.BaseModel, token: str) -> None:  # noqa: B027
        """Make output staged under `token` (from `Connector.stage`) visible.

        Idempotent: publishing an already-published token is a no-op, because the engine calls
        it again to recover after a crash between its snapshot commit and publication.
        """
