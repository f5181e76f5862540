"""The run worker: what a process forked by `ForkedRunLauncher` runs (defs/run_launcher.py),
and the imports its parent, a warm fork server, does once for all of them.

Importing this module is the warm-up: Dagster, its run-execution code and the code location
(sqlalchemy, sqlglot, the connectors) take ~2.5 s to import, and a run forked from a process
that has them starts in tens of milliseconds instead. Nothing here opens a file or a
database, which a fork must not inherit (the only threads, numpy's OpenBLAS pool, are
fork-safe). The definitions themselves are built in each run's own process, from the graph
pinned at launch (defs/pinning.py), and only for the run's own assets (`scope_to_run`).

Dagster's in-process run execution (`dagster api execute_run`'s body) is private in 1.13:
keep its use to this module.
"""

import importlib
import os
import socket

import sqlalchemy.orm
from dagster._cli.api import _execute_run_command_body
from dagster._core.instance import DagsterInstance, InstanceRef
from dagster._serdes import deserialize_value
from dagster._utils.interrupts import capture_interrupts

from composable_dagster.defs.load import scope_to_run
from composable_dagster.names import TAG_RUN_WORKER, run_worker_tag

# What a run imports on its way (found by listing the modules a run worker added): the code
# location, then what Dagster imports lazily to open its storage and execute, and what the
# connectors import on first use. A module missing here only costs its import in each run.
WARM_MODULES = (
    "dagster",
    "composable_dagster.definitions",
    "composable_dagster.catalog.tables",
    "composable_dagster.sync.engine",
    "dagster._core.instance.factory",
    "dagster._core.storage.sqlite_storage",
    "dagster._core.storage.local_compute_log_manager",
    "dagster._core.executor.in_process",
    "dagster._daemon.monitoring",
    "dagster._scheduler.scheduler",
    "alembic.command",
    "alembic.runtime.migration",
    "duckdb",
    "duckdb_engine",
    "pandas",
    "pyarrow",
    "sqlglot.dialects.duckdb",
    "sqlglot.dialects.postgres",
    "dagster_postgres",
)
for _name in WARM_MODULES:
    importlib.import_module(_name)

# The ORM's mapper configuration is pure Python and costs ~0.15 s on a run's first query.
sqlalchemy.orm.configure_mappers()


def execute_run(run_id: str, serialized_instance_ref: str) -> None:
    """Execute one launched run in this (forked) process, as `dagster api execute_run`
    would: events go to the run storage, SIGINT interrupts the run (how `terminate` stops
    it), and a failure is recorded on the run before the process exits."""
    instance_ref = deserialize_value(serialized_instance_ref, InstanceRef)
    with capture_interrupts(), DagsterInstance.from_ref(instance_ref) as instance:
        # Before the run's first event: how `terminate` and run monitoring find this process.
        instance.add_run_tags(
            run_id, {TAG_RUN_WORKER: run_worker_tag(socket.gethostname(), os.getpid())}
        )
        run = instance.get_run_by_id(run_id)
        if run is not None and run.asset_selection:
            # This run's assets (and those of the checks it runs), not every one.
            checks = {check.asset_key for check in run.asset_check_selection or ()}
            scope_to_run(run.asset_selection | checks)
        _execute_run_command_body(
            run_id, instance, write_stream_fn=lambda _event: None, set_exit_code_on_failure=False
        )
