"""Pin the catalog for run workers (the one place that touches Dagster's private load API).

Every run worker rebuilds the definitions in its own process. If it read the catalog again,
a sync deleted between launch and start would be missing (DagsterInvalidSubsetError, and no
failed materialization recorded). So the code server stores the catalog export it built
from in the reconstruction metadata, and workers rebuild from that same export.
`DefinitionsLoadContext` is private in Dagster 1.13: keep its use to this module.
"""

import json
from collections.abc import Callable
from typing import Any

from dagster._core.definitions.definitions_load_context import (
    DefinitionsLoadContext,
    DefinitionsLoadType,
)

PIN_KEY = "composable/catalog_export"


def pinned_catalog_export(read_catalog: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """The catalog export this load must use: the pinned one when reconstructing a run's
    definitions, otherwise a fresh read that is pinned for the runs launched from it."""
    context = DefinitionsLoadContext.get()
    if context.load_type == DefinitionsLoadType.RECONSTRUCTION:
        pinned = context.reconstruction_metadata.get(PIN_KEY)
        if pinned is not None:
            return json.loads(pinned)
    export = read_catalog()
    context.add_to_pending_reconstruction_metadata(PIN_KEY, json.dumps(export, sort_keys=True))
    return export
