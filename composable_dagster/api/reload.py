"""After a catalog change, Dagster reloads its definitions (in a background task), but only
when the graph they are built from changed.

The definitions hold the graph (catalog/graph.py: keys, deps, descriptions, schedules); runs
read their content from the catalog when they start. So most edits (a tree, a mapping, a
destination, a trait) need no reload at all: each change's task compares the graph's digest
with the one Dagster last loaded, and reloads only when they differ.

Reloads coalesce: one that starts after a change covers it, so a burst of changes costs at
most one reload in flight and one pending, never a queue of stale ones. Triggers do not wait
for reloads unless their own assets are not loaded yet (routers/syncs.py); `wait_idle` is
what they wait with then.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable

from composable_dagster.api.dagster_client import DagsterClient, DagsterUnavailableError

log = logging.getLogger(__name__)


# A change's background task starts as soon as its response is sent. One that has not
# started by then never will: the request failed after asking (its commit was refused, so
# there is nothing to reload), and triggers must not wait for it forever.
ABANDONED_AFTER_SECONDS = 30.0


class ReloadTracker:
    """Reloads of one API process: requested, pending, and the graph Dagster last loaded.

    `graph_digest` reads the digest of the catalog's graph as it is now.
    """

    def __init__(self, graph_digest: Callable[[], str]) -> None:
        self._graph_digest = graph_digest
        self.loaded_digest: str | None = None  # the graph of the last reload this process did
        self.reloads = 0  # reloads done (a number the tests and benchmarks read)
        # Requested and not finished: when each was requested, None once its task began.
        self._pending: dict[object, float | None] = {}
        # Changes committed (their background task began) that no reload has started after,
        # with the schedule each wants reset. A change's task runs after its commit, while
        # `request` runs before it: only a task's start proves Dagster can see the change.
        self._ready: dict[object, str | None] = {}
        self._idle = threading.Condition()
        self._serial = threading.Lock()  # one reload at a time; later ones see later rows

    def request(self, client: DagsterClient, *, schedule: str | None = None) -> Callable[[], None]:
        """Mark a change pending now; run the returned callable (as a background task)."""
        change = object()
        with self._idle:
            self._pending[change] = time.monotonic()

        def _reload() -> None:
            try:
                with self._idle:
                    self._pending[change] = None
                    self._ready[change] = schedule
                with self._serial:
                    with self._idle:
                        if change not in self._ready:
                            return  # a reload that started after this commit has finished
                        schedules = sorted({s for s in self._ready.values() if s is not None})
                        self._ready.clear()
                    self._reload_if_changed(client, schedules=schedules)
            finally:
                with self._idle:
                    self._pending.pop(change, None)
                    self._idle.notify_all()

        return _reload

    def _reload_if_changed(self, client: DagsterClient, *, schedules: list[str]) -> None:
        # Read before the reload: the code server reads the catalog after this, so what it
        # loads is at least this graph.
        digest = self._graph_digest()
        if digest == self.loaded_digest:
            # Content only: the next run reads it from the catalog. A status PUT still puts
            # its schedule back to what the status says, whatever the UI toggled.
            reset_schedules(client, schedules)
            return
        if reload_dagster(client, schedules=schedules):
            self.loaded_digest = digest
            self.reloads += 1

    def wait_idle(self, timeout: float) -> bool:
        """Wait until every requested reload finished (or was abandoned); False on timeout."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while True:
                now = time.monotonic()
                for change, requested in list(self._pending.items()):
                    if requested is not None and now - requested >= ABANDONED_AFTER_SECONDS:
                        del self._pending[change]
                waiting = list(self._pending.values())
                if not waiting:
                    return True
                if now >= deadline:
                    return False
                # Wake up when an unstarted request would count as abandoned, at the latest.
                expiry = min(
                    (r + ABANDONED_AFTER_SECONDS for r in waiting if r is not None),
                    default=deadline,
                )
                self._idle.wait(timeout=max(0.0, min(deadline, expiry) - now))


def reload_dagster(client: DagsterClient, *, schedules: Iterable[str] = ()) -> bool:
    """Reload the code location, then reset `schedules` so each sync's status (active or
    paused) decides whether it runs, whatever was toggled in the UI. False if Dagster could
    not be reached (the catalog change stands; a later change or trigger reloads)."""
    try:
        client.reload_location()
    except DagsterUnavailableError as err:
        log.warning("catalog changed but Dagster was not reloaded: %s", err)
        return False
    reset_schedules(client, schedules)
    return True


def reset_schedules(client: DagsterClient, schedules: Iterable[str]) -> None:
    try:
        for schedule in schedules:
            client.reset_schedule(schedule)
    except DagsterUnavailableError as err:
        log.warning("schedule not reset: %s", err)
