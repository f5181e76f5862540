"""After a catalog change, Dagster rebuilds its definitions (run as a background task)."""

from __future__ import annotations

import logging

from composable_dagster.api.dagster_client import DagsterClient, DagsterUnavailableError

log = logging.getLogger(__name__)


def reload_dagster(client: DagsterClient, *, schedule: str | None = None) -> None:
    """Reload the code location; with `schedule`, also reset that schedule so the sync's
    status (active/paused) decides whether it runs, whatever was toggled in the UI."""
    try:
        client.reload_location()
        if schedule is not None:
            client.reset_schedule(schedule)
    except DagsterUnavailableError as err:
        # The catalog change stands; the next reload (or trigger) picks it up.
        log.warning("catalog changed but Dagster was not reloaded: %s", err)
