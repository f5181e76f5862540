"""A Dagster run launcher that forks each run from a warm process (dagster.yaml names it).

Dagster's default launcher asks the code server to start each run in a fresh interpreter
(multiprocessing "spawn"), which imports Dagster, the CLI and the code location again:
~2.8 s of every run before its first step, most of what a user waits for after a trigger.
This one keeps a standard-library fork server (`multiprocessing` "forkserver") that has
imported all of that once (defs/run_worker.py) and forks a run worker from it per run.
Each run still gets its own process and builds its definitions from the graph pinned at
launch, exactly as with the default launcher; only the imports are shared.

Runs execute on the host of the process that launches them (the daemon, behind the queue),
as with the default launcher under `composable serve`. A production deployment that runs
workers elsewhere sets Dagster's own launcher instead (K8s, ECS, Docker).

`terminate` interrupts the worker (SIGINT, as Dagster's own cancellation does), and
`check_run_worker_health` tells Dagster's run monitoring when a worker died without
recording the end of its run (kill -9, OOM), so such a run is marked failed instead of
blocking its sync's next trigger forever.
"""

import multiprocessing
import multiprocessing.forkserver
import os
import signal
import socket
import threading
from collections.abc import Mapping
from multiprocessing.context import ForkServerContext
from typing import Any

import dagster as dg
from dagster._core.launcher import CheckRunHealthResult, LaunchRunContext, RunLauncher, WorkerStatus
from dagster._serdes import ConfigurableClass, ConfigurableClassData, serialize_value

from composable_dagster.names import TAG_RUN_WORKER, parse_run_worker_tag

WORKER_MODULE = "composable_dagster.defs.run_worker"
_FORK_SERVER_MARK = "multiprocessing.forkserver"  # in every fork server child's command line


class ForkedRunLauncher(RunLauncher, ConfigurableClass):
    """Launch each run in a process forked from a fork server that has imported Dagster and
    the code location (WORKER_MODULE)."""

    def __init__(self, inst_data: ConfigurableClassData | None = None):
        self._inst_data = inst_data
        self._context: ForkServerContext | None = None
        self._context_lock = threading.Lock()
        super().__init__()
        if multiprocessing.parent_process() is None:
            # The webserver or the daemon (not a run worker, which launches nothing): warm
            # the fork server now, so the first run does not wait for its imports.
            threading.Thread(target=self._warm, name="fork-server-warm", daemon=True).start()

    @property
    def inst_data(self) -> ConfigurableClassData | None:
        return self._inst_data

    @classmethod
    def config_type(cls) -> dict[str, Any]:
        return {}

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData, config_value: Mapping[str, Any]
    ) -> "ForkedRunLauncher":
        return cls(inst_data=inst_data)

    def _fork_server(self) -> ForkServerContext:
        with self._context_lock:
            if self._context is None:
                context = multiprocessing.get_context("forkserver")
                # One fork server per process; its start pays for the imports, once.
                context.set_forkserver_preload([WORKER_MODULE])
                self._context = context
            return self._context

    def _warm(self) -> None:
        self._fork_server()
        multiprocessing.forkserver.ensure_running()

    def launch_run(self, context: LaunchRunContext) -> None:
        from composable_dagster.defs import run_worker  # the function the fork runs

        run = context.dagster_run
        fork_server = self._fork_server()
        process = fork_server.Process(
            target=run_worker.execute_run,
            args=(run.run_id, serialize_value(self._instance.get_ref())),
            name=f"dagster-run-{run.run_id}",
        )
        with self._context_lock:  # launches come from several threads of the webserver
            multiprocessing.active_children()  # reap finished workers (closes their pipes)
            process.start()
        # The worker tags the run with its pid itself, before its first event: a tag written
        # here could lose a race with the worker's own writes of the run.

    def _local_worker_pid(self, run: dg.DagsterRun) -> int | None:
        """The pid of the run's worker if it runs on this host and is ours, else None."""
        worker = parse_run_worker_tag(run.tags.get(TAG_RUN_WORKER, ""))
        if worker is None or worker[0] != socket.gethostname():
            return None
        return worker[1]

    def terminate(self, run_id: str) -> bool:
        run = self._instance.get_run_by_id(run_id)
        if not run or run.is_finished:
            return False
        self._instance.report_run_canceling(run)
        pid = self._local_worker_pid(run)
        if pid is None or not _is_fork_server_child(pid):
            self._instance.report_engine_event(
                "The run worker is not running on this host; it cannot be interrupted.", run
            )
            return False
        try:
            os.kill(pid, signal.SIGINT)
        except ProcessLookupError:
            return False  # it ended meanwhile
        return True

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: dg.DagsterRun) -> CheckRunHealthResult:
        pid = self._local_worker_pid(run)
        if pid is None:
            # Run monitoring fails a run on anything but RUNNING: without evidence that the
            # worker died (its tag, on this host), say it runs.
            return CheckRunHealthResult(WorkerStatus.RUNNING, "the run worker is not on this host")
        if _is_fork_server_child(pid):
            return CheckRunHealthResult(WorkerStatus.RUNNING, run_worker_id=str(pid))
        return CheckRunHealthResult(
            WorkerStatus.FAILED,
            f"the run worker (pid {pid}) exited without recording the end of the run",
            run_worker_id=str(pid),
        )


def _is_fork_server_child(pid: int) -> bool:
    """Whether `pid` is alive and a fork server's child (a reused pid is not)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            return _FORK_SERVER_MARK.encode() in cmdline.read()
    except OSError:
        return False
