"""After a catalog change, Dagster reloads its definitions (in a background task), but only
when the graph they are built from changed.

The definitions hold the graph (catalog/graph.py: keys, deps, descriptions, schedules); runs
read their content from the catalog when they start. So most edits (a tree, a mapping, a
destination, a trait) need no reload at all: each change's task compares the graph's digest
with the one Dagster last loaded, and reloads only when they differ.

Reloads coalesce and settle: one thread per API process does them, one at a time, each
covering every change committed before it started. A change's background task only marks
it committed and returns (a task that waited for a reload held one of the server's worker
threads: a burst of creates exhausted them and stalled every request). The thread waits
until no change has come for `settle_seconds` (or the oldest has waited `max_delay_seconds`)
before reloading, so a client creating 1,000 audiences back to back does not keep a reload
running on the machine's cores all along; a trigger that needs its asset loaded says so
(`wait_idle`), and the pending reload starts at once. Triggers do not wait for reloads
unless their own assets are not loaded yet (routers/syncs.py).

The catalog may be split into several code locations (COMPOSABLE_CODE_LOCATIONS, one per
shard of the graph: catalog/graph.py); a batch reloads only the locations whose part of
the graph changed, so a create at 10,000 audiences rebuilds one shard, not all of them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from composable_dagster.api.dagster_client import DagsterClient, DagsterUnavailableError

log = logging.getLogger(__name__)


# A change's background task starts as soon as its response is sent. One that has not
# started by then never will: the request failed after asking (its commit was refused, so
# there is nothing to reload), and triggers must not wait for it forever.
ABANDONED_AFTER_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class GraphState:
    """The catalog's graph as it is now, by the code location that builds each part."""

    digests: Mapping[str, str]  # code location -> digest of the graph it builds
    schedule_locations: Mapping[str, str] = field(default_factory=dict)  # schedule -> location
    sync_locations: Mapping[str, str] = field(default_factory=dict)  # sync id -> location


class ReloadTracker:
    """Reloads of one API process: requested, pending, and the graph Dagster last loaded.

    `read_graph` reads the state of the catalog's graph as it is now.
    """

    def __init__(
        self,
        read_graph: Callable[[], GraphState],
        *,
        settle_seconds: float = 0.5,
        max_delay_seconds: float = 30.0,
    ) -> None:
        self._read_graph = read_graph
        self._settle_seconds = settle_seconds
        self._max_delay_seconds = max_delay_seconds
        # Per code location, the graph of the last reload this process did of it.
        self.loaded_digests: dict[str, str] = {}
        self.reloads = 0  # code-location reloads done (a number the tests and benchmarks read)
        # Requested and not finished: when each was requested, None once it was committed.
        self._pending: dict[object, float | None] = {}
        # Changes committed (their background task ran) that no reload has started after,
        # with the schedule each wants reset. A change's task runs after its commit, while
        # `request` runs before it: only a task's run proves Dagster can see the change.
        self._ready: dict[object, str | None] = {}
        self._first_ready = 0.0  # when the oldest of `_ready` was committed
        self._last_ready = 0.0  # when the newest was
        self._hurry = False  # a trigger waits: reload without settling
        self._client: DagsterClient | None = None
        self._idle = threading.Condition()
        self._worker: threading.Thread | None = None

    def request(self, client: DagsterClient, *, schedule: str | None = None) -> Callable[[], None]:
        """Mark a change pending now; run the returned callable (as a background task, after
        the change's commit): it hands the change to the reload thread and returns."""
        change = object()
        with self._idle:
            self._pending[change] = time.monotonic()

        def _committed() -> None:
            with self._idle:
                now = time.monotonic()
                self._pending[change] = None
                if not self._ready:
                    self._first_ready = now
                self._ready[change] = schedule
                self._last_ready = now
                self._client = client
                if self._worker is None:
                    self._worker = threading.Thread(
                        target=self._reload_forever, name="dagster-reloads", daemon=True
                    )
                    self._worker.start()
                self._idle.notify_all()

        return _committed

    def _next_batch(self) -> tuple[DagsterClient, dict[object, str | None]]:
        """Wait for committed changes and for them to settle; take them all."""
        with self._idle:
            while True:
                if self._ready:
                    now = time.monotonic()
                    due = min(
                        self._last_ready + self._settle_seconds,
                        self._first_ready + self._max_delay_seconds,
                    )
                    if self._hurry or now >= due:
                        break
                    self._idle.wait(timeout=due - now)
                else:
                    self._idle.wait()
            batch, self._ready = self._ready, {}
            self._hurry = False
            assert self._client is not None  # set with every committed change
            return self._client, batch

    def _reload_forever(self) -> None:
        while True:
            client, batch = self._next_batch()
            try:
                schedules = sorted({s for s in batch.values() if s is not None})
                self._reload_if_changed(client, schedules=schedules)
            except Exception:  # the thread must outlive any one failure
                log.exception("reloading Dagster failed; the next change tries again")
            finally:
                with self._idle:
                    for change in batch:
                        self._pending.pop(change, None)
                    self._idle.notify_all()

    def _reload_if_changed(self, client: DagsterClient, *, schedules: list[str]) -> None:
        # Read before the reload: the code server reads the catalog after this, so what it
        # loads is at least this graph.
        state = self._read_graph()
        changed = {
            location: digest
            for location, digest in state.digests.items()
            if self.loaded_digests.get(location) != digest
        }
        # Only a content edit when nothing changed: the next run reads it from the catalog.
        # A status PUT still puts its schedule back to what the status says, whatever the UI
        # toggled (after the reload of its location, if that one changed).
        for location, digest in changed.items():
            if not reload_dagster(client, location=location):
                continue
            self.reloads += 1
            with self._idle:
                # A change committed since this batch was taken (it waits in `_ready`) may
                # or may not be in what the code server read, so what Dagster has is
                # unknown: the next batch reloads even if the graph looks as before (a pause
                # and a resume within one reload would otherwise leave Dagster with the
                # pause).
                if self._ready:
                    self.loaded_digests.pop(location, None)
                else:
                    self.loaded_digests[location] = digest
        reset_schedules(
            client,
            [(name, state.schedule_locations.get(name, client.location)) for name in schedules],
        )

    def reload_location_of(self, client: DagsterClient, sync_id: str) -> None:
        """Reload now the code location that builds sync `sync_id` (by the current graph)."""
        location = self._read_graph().sync_locations.get(sync_id, client.location)
        client.reload_location(location)
        self.reloads += 1

    def wait_idle(self, timeout: float) -> bool:
        """Wait until every requested reload finished (or was abandoned); False on timeout.
        What is waiting to settle starts now: somebody needs it."""
        deadline = time.monotonic() + timeout
        with self._idle:
            self._hurry = True
            self._idle.notify_all()
            while True:
                now = time.monotonic()
                for change, requested in list(self._pending.items()):
                    if requested is not None and now - requested >= ABANDONED_AFTER_SECONDS:
                        del self._pending[change]
                waiting = list(self._pending.values())
                if not waiting:
                    self._hurry = False
                    return True
                if now >= deadline:
                    return False
                # Wake up when an unstarted request would count as abandoned, at the latest.
                expiry = min(
                    (r + ABANDONED_AFTER_SECONDS for r in waiting if r is not None),
                    default=deadline,
                )
                self._idle.wait(timeout=max(0.0, min(deadline, expiry) - now))


def reload_dagster(client: DagsterClient, *, location: str) -> bool:
    """Reload code location `location`. False if Dagster could not be reached (the catalog
    change stands; a later change or trigger reloads)."""
    try:
        client.reload_location(location)
    except DagsterUnavailableError as err:
        log.warning("catalog changed but Dagster did not reload %s: %s", location, err)
        return False
    return True


def reset_schedules(client: DagsterClient, schedules: Iterable[tuple[str, str]]) -> None:
    """Reset each (schedule, code location), so each sync's status (active or paused)
    decides whether it runs, whatever was toggled in the UI."""
    try:
        for schedule, location in schedules:
            client.reset_schedule(schedule, location=location)
    except DagsterUnavailableError as err:
        log.warning("schedule not reset: %s", err)
