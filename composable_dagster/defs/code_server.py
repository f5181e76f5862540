"""The catalog's code server: Dagster's gRPC code server, except that a reload rebuilds the
definitions in this warm process (`composable serve` starts it; the webserver and the
daemon reach it as a `grpc_server` location).

Dagster serves a `python_module` location from a proxy that answers each reload by
starting a new code-server process: at 1,000 audiences, 2.7 s of imports before the
definitions are built again. And every repository-snapshot request (the webserver's and
the daemon's after each reload) snapshots and serializes the whole repository anew: 1.7 s
each at 1,000. Here a reload (`ReloadCode`, what the webserver's `reloadRepositoryLocation`
sends) builds the definitions again in this process, the same way the server's start does
(`LoadedRepositories`), swaps them in whole as Dagster's own `ReloadCodeWithState` does,
takes a new server id (so the daemon's watch thread refreshes too) and snapshots once for
every client of that generation. Requests in flight meanwhile are answered from the
previous generation. Run workers do not load code from here (defs/run_launcher.py).

Dagster's gRPC server classes are private (`dagster._grpc`, pinned in pyproject.toml):
keep their use to this module.
"""

import argparse
import contextlib
import gc
import importlib
import logging
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import dagster as dg
import grpc
from dagster._core.definitions.repository_definition import RepositoryDefinition
from dagster._core.remote_origin import RemoteRepositoryOrigin
from dagster._core.remote_representation.external_data import JobDataSnap, RepositorySnap
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from dagster._core.utils import FuturesAwareThreadPoolExecutor
from dagster._grpc.__generated__ import dagster_api_pb2
from dagster._grpc.server import DagsterApiServer, DagsterGrpcServer, LoadedRepositories
from dagster._serdes import deserialize_value, serialize_value
from dagster._utils.error import SerializableErrorInfo, serializable_error_info_from_exc_info
from dagster._utils.log import configure_loggers
from dagster_shared.record import copy

from composable_dagster.defs.syncs import SCHEDULE_TARGET_METADATA

LOCATION_MODULE = "composable_dagster.definitions"
_PARENT_POLL_SECONDS = 1.0


@dataclass(eq=False)
class _Generation:
    """One load of the definitions and the snapshots computed from it, swapped in whole:
    a reader that took a generation computes from it and caches into it, never into
    another (the snapshots of one server id always come from one load)."""

    loaded: LoadedRepositories | None
    snapshots: dict[tuple[str, ...], str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


class CatalogCodeServer(DagsterApiServer):
    """`DagsterApiServer` whose `ReloadCode` reloads in process and whose repository
    and job snapshots are computed once per generation of definitions."""

    def __init__(self, **kwargs: Any) -> None:
        self._location_name = kwargs.get("location_name")
        super().__init__(**kwargs)
        self._generation = _Generation(self._loaded_repositories)
        self._snapshot_repositories(self._generation)
        self._snapshot_jobs_soon(self._generation)

    def ReloadCode(
        self, _request: dagster_api_pb2.ReloadCodeRequest, _context: grpc.ServicerContext
    ) -> dagster_api_pb2.ReloadCodeReply:
        with self._reload_lock:
            started = time.perf_counter()
            # No cyclic GC while building and snapshotting: its full passes walk the
            # previous generation's definitions too (0.5 s of 3 s at 1,000 audiences).
            # The garbage is collected after the reply, on the job-snapshot thread.
            gc.disable()
            try:
                try:
                    loaded, error = self._load(), None
                except Exception:
                    # As at a failed start: the location shows the error until a reload
                    # loads.
                    loaded, error = None, serializable_error_info_from_exc_info(sys.exc_info())
                    self._logger.exception("Reloading the definitions failed")
                built = time.perf_counter()
                if self._same_definitions(loaded):
                    # The build was reused (defs/load.py: nothing it reads changed): keep
                    # the generation, its snapshots and its id, so no client refetches.
                    self._logger.info("Reload found the definitions unchanged")
                    return dagster_api_pb2.ReloadCodeReply()
                generation = _Generation(loaded)
                self._snapshot_repositories(generation)
                # What Dagster's own RPCs read, then ours, then the id clients watch: a
                # client that sees the new id finds everything of the new load.
                self._serializable_load_error = error
                self._loaded_repositories = loaded
                self._generation = generation
                self._server_id = str(uuid.uuid4())
            finally:
                gc.enable()
            self._snapshot_jobs_soon(generation, then_collect=True)
            self._logger.info(
                "Reloaded definitions in %.2f s (build %.2f s, snapshot %.2f s)",
                time.perf_counter() - started,
                built - started,
                time.perf_counter() - built,
            )
        return dagster_api_pb2.ReloadCodeReply()

    def ReloadCodeWithState(
        self, _request: dagster_api_pb2.ReloadCodeWithStateRequest, _context: grpc.ServicerContext
    ) -> dagster_api_pb2.ReloadCodeWithStateReply:
        # Dagster's version edits the loaded repositories in place for state-backed
        # components, which this location has none of, behind our snapshots' back.
        return dagster_api_pb2.ReloadCodeWithStateReply(
            serialized_error=serialize_value(
                SerializableErrorInfo(
                    "The catalog's code server reloads with ReloadCode only.", [], None
                )
            )
        )

    def _same_definitions(self, loaded: LoadedRepositories | None) -> bool:
        current = self._generation.loaded
        if loaded is None or current is None:
            return False
        new, old = loaded.definitions_by_name, current.definitions_by_name
        return new.keys() == old.keys() and all(new[name] is old[name] for name in new)

    def _load(self) -> LoadedRepositories:
        # The module stays imported; loading it again calls its definitions function,
        # which reads the catalog (defs/load.py).
        return LoadedRepositories(
            self._loadable_target_origin,
            entry_point=self._entry_point,
            container_image=self._container_image,
            container_context=self._container_context,
            code_location_name=self._location_name,
        )

    def _snapshot_repositories(self, generation: _Generation) -> None:
        """Snapshot every repository of `generation` now, as the webserver and the daemon
        will ask (deferred job snapshots), so a reload's reply means its snapshot is ready."""
        for name in generation.loaded.definitions_by_name if generation.loaded else ():
            try:
                self._repository_snapshot(generation, name, defer_snapshots=True)
            except Exception:  # a request for it answers with the error (Dagster's path)
                self._logger.exception("Snapshot of repository %s failed", name)

    def _snapshot_jobs_soon(self, generation: _Generation, *, then_collect: bool = False) -> None:
        """Snapshot the jobs on another thread: clients ask for them once they have read the
        repository's snapshot (0.9 s later at 1,000 audiences), time this process is idle.
        Then collect the previous generation's garbage, if asked."""

        def snapshot_jobs() -> None:
            for name, repo in (
                generation.loaded.definitions_by_name.items() if generation.loaded else ()
            ):
                for job in repo.get_all_jobs():
                    if self._generation is not generation:
                        return  # a newer load replaced this one
                    try:
                        self._job_snapshot(generation, name, job.name)
                    except Exception:  # the request that needs it reports the error
                        self._logger.debug("Snapshot of job %s failed", job.name, exc_info=True)
            if then_collect:
                gc.collect()

        threading.Thread(target=snapshot_jobs, name="job-snapshots", daemon=True).start()

    @staticmethod
    def _cached(
        generation: _Generation,
        key: tuple[str, ...],
        compute: Callable[[RepositoryDefinition], str],
    ) -> str:
        """`compute(repository)` (key[0] names the repository) serialized once per generation
        of definitions: the webserver and the daemon each ask for the same snapshots after
        every reload (1.7 s of CPU each at 1,000 audiences when computed per request)."""
        if key in generation.snapshots:
            return generation.snapshots[key]
        with generation.lock:
            if key not in generation.snapshots:
                loaded = generation.loaded
                if loaded is None or key[0] not in loaded.definitions_by_name:
                    raise KeyError(key[0])
                generation.snapshots[key] = compute(loaded.definitions_by_name[key[0]])
            return generation.snapshots[key]

    def _repository_snapshot(
        self, generation: _Generation, repository_name: str, *, defer_snapshots: bool
    ) -> str:
        return self._cached(
            generation,
            (repository_name, "repository", str(defer_snapshots)),
            lambda repo: serialize_value(
                _with_schedule_targets(
                    RepositorySnap.from_def(repo, defer_snapshots=defer_snapshots)
                )
            ),
        )

    def _job_snapshot(self, generation: _Generation, repository_name: str, job_name: str) -> str:
        return self._cached(
            generation,
            (repository_name, "job", job_name),
            lambda repo: serialize_value(
                JobDataSnap.from_job_def(repo.get_job(job_name), include_parent_snapshot=True)
            ),
        )

    def _get_serialized_external_repository_data(
        self, request: dagster_api_pb2.ExternalRepositoryRequest
    ) -> str:
        try:
            origin = deserialize_value(
                request.serialized_repository_python_origin, RemoteRepositoryOrigin
            )
            return self._repository_snapshot(
                self._generation, origin.repository_name, defer_snapshots=request.defer_snapshots
            )
        except Exception:
            # Dagster's own path, which answers with the error snapshot clients expect.
            return super()._get_serialized_external_repository_data(request)

    def ExternalJob(
        self, request: dagster_api_pb2.ExternalJobRequest, context: grpc.ServicerContext
    ) -> dagster_api_pb2.ExternalJobReply:
        try:
            origin = deserialize_value(request.serialized_repository_origin, RemoteRepositoryOrigin)
            job_data = self._job_snapshot(
                self._generation, origin.repository_name, request.job_name
            )
        except Exception:
            return super().ExternalJob(request, context)
        return dagster_api_pb2.ExternalJobReply(serialized_job_data=job_data)


def _with_schedule_targets(snap: RepositorySnap) -> RepositorySnap:
    """`snap` with each sync schedule's assets as its asset selection (what the UI shows as
    its target, and what Dagster gives a schedule built with `target=` assets). Display
    only: the schedule's run requests select the same assets themselves."""
    schedules = []
    for schedule in snap.schedules:
        target = schedule.metadata.get(SCHEDULE_TARGET_METADATA)
        if schedule.asset_selection is None and isinstance(target, dg.JsonMetadataValue):
            keys = [dg.AssetKey(path) for path in target.value]
            schedule = copy(schedule, asset_selection=dg.AssetSelection.assets(*keys))
        schedules.append(schedule)
    return copy(snap, schedules=schedules)


def _stop_with_parent(termination: threading.Event, parent: int) -> None:
    """End the server when the process that started it (`composable serve`, pid `parent`)
    is gone, even if it died without stopping its children (kill -9)."""
    while not termination.wait(_PARENT_POLL_SECONDS):
        if os.getppid() != parent:
            termination.set()


def serve(*, socket: str, location_name: str, parent_pid: int) -> None:
    # What the imports made lives as long as the process: out of the cyclic GC's passes.
    # (An import that fails is reported by the load below, as Dagster's server does.)
    with contextlib.suppress(Exception):
        importlib.import_module(LOCATION_MODULE)
    gc.collect()
    gc.freeze()
    configure_loggers(log_level="INFO")
    logger = logging.getLogger("dagster.code_server")
    termination = threading.Event()
    threadpool = FuturesAwareThreadPoolExecutor()
    servicer = CatalogCodeServer(
        server_termination_event=termination,
        logger=logger,
        server_threadpool_executor=threadpool,
        loadable_target_origin=LoadableTargetOrigin(
            executable_path=sys.executable,
            module_name=LOCATION_MODULE,
            working_directory=os.getcwd(),
        ),
        location_name=location_name,
        # A location that fails to load still serves its error, as Dagster's does.
        lazy_load_user_code=True,
    )
    # A unix socket, as Dagster's own code servers use under `dagster dev`: reachable from
    # this host only, and no port to pick and lose before the seconds of loading end.
    server = DagsterGrpcServer(
        server_termination_event=termination,
        dagster_api_servicer=servicer,
        logger=logger,
        threadpool_executor=threadpool,
        socket=socket,
    )
    threading.Thread(target=_stop_with_parent, args=(termination, parent_pid), daemon=True).start()
    logger.info("Started the catalog's code server on %s in process %s", socket, os.getpid())
    server.serve()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--socket", required=True, help="the unix socket to listen on")
    parser.add_argument("--location-name", required=True)
    parser.add_argument(
        "--parent-pid", type=int, required=True, help="end when this process is gone"
    )
    args = parser.parse_args(argv)
    serve(socket=args.socket, location_name=args.location_name, parent_pid=args.parent_pid)


if __name__ == "__main__":
    main()
