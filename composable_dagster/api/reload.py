"""After a catalog change, Dagster rebuilds its definitions (in a background task).

A trigger must not launch a run on definitions older than the change a client just made
(a PUT of the sync's config, say). Each change therefore marks a reload pending before its
response is sent, and triggers wait until no reload is pending.

Reloads coalesce: one that starts after a change covers it, so a burst of changes (or an
unreachable Dagster, where each attempt waits for its timeout) costs at most two reloads,
not one per change, and never keeps triggers waiting for a queue of stale reloads.
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
    """Counts reloads requested but not finished, for one API process."""

    def __init__(self) -> None:
        # Requested and not finished: when each was requested, None once its task began.
        self._pending: dict[object, float | None] = {}
        # Changes committed (their background task began) that no reload has started after,
        # with the schedule each wants reset. A change's task runs after its commit, while
        # `request` runs before it: only a task's start proves Dagster can see the change.
        self._ready: dict[object, str | None] = {}
        self._idle = threading.Condition()
        self._serial = threading.Lock()  # one reload at a time; later ones see later rows

    def request(self, client: DagsterClient, *, schedule: str | None = None) -> Callable[[], None]:
        """Mark a reload pending now; run the returned callable (as a background task)."""
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
                    # Taken even if Dagster turns out unreachable: retrying each queued
                    # change would fail the same way, and a trigger reloads again.
                    reload_dagster(client, schedules=schedules)
            finally:
                with self._idle:
                    self._pending.pop(change, None)
                    self._idle.notify_all()

        return _reload

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


def reload_dagster(client: DagsterClient, *, schedules: Iterable[str] = ()) -> None:
    """Reload the code location, then reset `schedules` so each sync's status (active or
    paused) decides whether it runs, whatever was toggled in the UI."""
    try:
        client.reload_location()
        for schedule in schedules:
            client.reset_schedule(schedule)
    except DagsterUnavailableError as err:
        # The catalog change stands; the next reload (or trigger) picks it up.
        log.warning("catalog changed but Dagster was not reloaded: %s", err)
