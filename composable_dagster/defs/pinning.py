"""Pin the catalog's graph for run workers (the one place that touches Dagster's private
load API).

Every run worker rebuilds the definitions in its own process. If it read the catalog again,
a sync deleted between launch and start would be missing (DagsterInvalidSubsetError, and no
failed materialization recorded), and every worker would pay for the read. So the code
server stores the graph it built from in the reconstruction metadata, and workers rebuild
from that same graph. The graph holds no content and no secret (catalog/graph.py): runs
read those from the catalog when they start. `DefinitionsLoadContext` is private in
Dagster 1.13: keep its use to this module.
"""

from collections.abc import Callable

from dagster._core.definitions.definitions_load_context import (
    DefinitionsLoadContext,
    DefinitionsLoadType,
)

from composable_dagster.catalog.graph import CatalogGraph

PIN_KEY = "composable/catalog_graph"


def pinned_graph(read_graph: Callable[[], CatalogGraph]) -> tuple[CatalogGraph, str]:
    """The graph this load must use, and its JSON: the pinned one when reconstructing a
    run's definitions, otherwise a fresh read that is pinned for the runs launched from it."""
    context = DefinitionsLoadContext.get()
    if context.load_type == DefinitionsLoadType.RECONSTRUCTION:
        pinned = context.reconstruction_metadata.get(PIN_KEY)
        if pinned is not None:
            return CatalogGraph.from_json(pinned), pinned
    graph = read_graph()
    graph_json = graph.to_json()
    context.add_to_pending_reconstruction_metadata(PIN_KEY, graph_json)
    return graph, graph_json
