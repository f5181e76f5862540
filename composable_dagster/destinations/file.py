"""The `file` destination: one file per run in a local directory (CSV, JSONL or Parquet).

Object storage semantics, as documented for S3-style destinations: it can add, upsert and
mirror (a full snapshot per run), but it cannot remove individual records.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Literal

import pydantic

from composable_dagster.destinations.base import (
    Capabilities,
    ConnectionCheck,
    DestinationType,
    SyncMode,
)


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


class FileDestination(DestinationType):
    name = "file"
    config_model = FileConfig
    capabilities = Capabilities(
        modes=frozenset({SyncMode.ADD, SyncMode.UPSERT, SyncMode.MIRROR}), batch_size=100_000
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
