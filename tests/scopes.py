"""Destination scopes for tests of delivery mechanics (writing, publishing, retrying).

Confinement itself is tested against the real `DestinationScope` (tests/security). Tests of
what a connector does with a directory they made in `tmp_path` use `AnywhereScope`: the
same type with its one rule, "stay in the export directory", lifted.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from composable_dagster.destinations import DestinationScope

TEST_PROTOCOLS = frozenset({"memory", "absentfs", "nosuchproto"})


@dataclass(frozen=True, slots=True)
class AnywhereScope(DestinationScope):
    """A scope whose export directory is the whole filesystem (tests only)."""

    def confine(self, path: str) -> Path:
        return Path(os.path.realpath(Path(path).expanduser()))


ANYWHERE = AnywhereScope(
    export_root=Path("/"), workspace_slug="tests", file_protocols=TEST_PROTOCOLS
)
