"""After a catalog change, Dagster rebuilds its definitions (in a background task).

A trigger must not launch a run on definitions older than the change a client just made
(a PUT of the sync's config, say). Each change therefore marks a reload pending before its
response is sent, and triggers wait until no reload is pending.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from composable_dagster.api.dagster_client import DagsterClient, DagsterUnavailableError

log = logging.getLogger(__name__)


class ReloadTracker:
    """Counts reloads requested but not finished, for one API process."""

    def __init__(self) -> None:
        self._pending = 0
        self._idle = threading.Condition()
        self._serial = threading.Lock()  # one reload at a time; later ones see later rows

    def request(self, client: DagsterClient, *, schedule: str | None = None) -> Callable[[], None]:
        """Mark a reload pending now; run the returned callable (as a background task)."""
        with self._idle:
            self._pending += 1

        def _reload() -> None:
            try:
                with self._serial:
                    reload_dagster(client, schedule=schedule)
            finally:
                with self._idle:
                    self._pending -= 1
                    self._idle.notify_all()

        return _reload

    def wait_idle(self, timeout: float) -> bool:
        """Wait until every requested reload finished; False on timeout."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout=timeout)


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
