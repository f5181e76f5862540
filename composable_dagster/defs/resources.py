"""Resources of the code location."""

from pathlib import Path

import dagster as dg

from composable_dagster.warehouse.activation import ActivationStore


class ActivationStoreResource(dg.ConfigurableResource):
    """Where audience memberships (and sync snapshots) are stored; see warehouse/activation."""

    home: str
    warehouse_url: str
    memory_limit: str | None = None

    def store(self) -> ActivationStore:
        return ActivationStore(
            warehouse_url=self.warehouse_url,
            home=Path(self.home),
            memory_limit=self.memory_limit or None,
        )
