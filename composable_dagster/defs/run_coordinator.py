"""Dagster's run queue, except for API triggers, which start at once (dagster.yaml names it).

The queue's daemon looks for queued runs once a second at best, so every queued run waits
0.5-1 s before it starts. A run the API triggers needs no queue: the API launches it only
after finding, under the catalog's trigger lock, that no other run of its sync is queued or
running (api/routers/syncs.py), which is what the queue's per-sync limit would check. Every
other run (a schedule's tick, a launch from the Dagster UI) is queued as before, and the
tag limits in dagster.yaml keep two runs of one sync apart.

(A schedule's tick queued in the same instant as an API trigger may run beside it; the
activation store's lock then runs their syncs one after the other, so neither loses or
doubles a member.)
"""

import dagster as dg
from dagster._core.run_coordinator import QueuedRunCoordinator, SubmitRunContext

from composable_dagster.names import TAG_TRIGGER, TRIGGER_API


class TriggerFirstRunCoordinator(QueuedRunCoordinator):
    """`QueuedRunCoordinator` (same configuration) that launches API-triggered runs at once."""

    def submit_run(self, context: SubmitRunContext) -> dg.DagsterRun:
        run = context.dagster_run
        # A re-execution from the UI copies its parent's tags, the trigger's included: it
        # was not checked by the API, so it queues.
        from_api = run.tags.get(TAG_TRIGGER) == TRIGGER_API and run.parent_run_id is None
        if not from_api or run.status != dg.DagsterRunStatus.NOT_STARTED:
            return super().submit_run(context)
        self._instance.launch_run(run.run_id, context.workspace)
        launched = self._instance.get_run_by_id(run.run_id)
        assert launched is not None  # just created, and runs are never deleted meanwhile
        return launched
