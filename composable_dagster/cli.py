"""The `composable` command: init (with demo data), serve, api, keys, workspaces.

Heavy modules are imported inside the commands so `composable --help` answers at once.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from composable_dagster.names import location_names
from composable_dagster.settings import Settings, get_settings

REPO_ROOT = Path(__file__).resolve().parents[1]


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return 2
    return args.run(args, get_settings())


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="composable", description=__doc__)
    commands = parser.add_subparsers(title="commands")

    init = commands.add_parser("init", help="create the catalog; --demo adds demo data")
    init.add_argument("--demo", action="store_true", help="build the demo warehouse + workspace")
    init.add_argument("--customers", type=int, default=100_000, help="demo scale (customers)")
    init.add_argument("--rebuild", action="store_true", help="rebuild the demo warehouse")
    init.set_defaults(run=_init)

    serve = commands.add_parser(
        "serve", help="run the catalog's code server, dagster dev and the API together"
    )
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--dagster-port", type=int, default=3000)
    serve.add_argument("--api-port", type=int, default=8000)
    serve.set_defaults(run=_serve)

    api = commands.add_parser("api", help="run the API alone")
    api.add_argument("--host", default="127.0.0.1")
    api.add_argument("--port", type=int, default=8000)
    api.set_defaults(run=_api)

    keys = commands.add_parser("keys", help="API keys").add_subparsers(title="keys commands")
    create_key = keys.add_parser("create", help="create an API key (printed once)")
    create_key.add_argument("--workspace", required=True, help="workspace id or slug")
    create_key.add_argument("--name", default="cli")
    create_key.set_defaults(run=_create_key)

    secrets = commands.add_parser("secrets", help="destination secrets").add_subparsers(
        title="secrets commands"
    )
    rotate = secrets.add_parser(
        "rotate",
        help="re-encrypt every stored secret with the first key of COMPOSABLE_SECRET_KEY "
        "(set it to 'new,old' first; drop the old key afterwards)",
    )
    rotate.set_defaults(run=_rotate_secrets)

    spaces = commands.add_parser("workspaces", help="workspaces").add_subparsers(title="commands")
    create_ws = spaces.add_parser("create", help="create a workspace and its first API key")
    create_ws.add_argument("name")
    create_ws.add_argument("--slug")
    create_ws.set_defaults(run=_create_workspace)
    return parser


def _print_json(payload: object) -> None:
    print(json.dumps(payload, indent=2))


def _upgrade(settings: Settings) -> None:
    """Migrate the catalog; the secret key (created when missing) encrypts old secrets."""
    from composable_dagster.catalog.db import upgrade_catalog
    from composable_dagster.catalog.secret_box import secret_box_for

    upgrade_catalog(settings.resolved_catalog_url, secret_box=secret_box_for(settings))


def _init(args: argparse.Namespace, settings: Settings) -> int:
    from composable_dagster.catalog.db import catalog_session

    settings.home_dir.mkdir(parents=True, exist_ok=True)
    _upgrade(settings)
    if not args.demo:
        _print_json({"catalog_url": settings.resolved_catalog_url})
        return 0

    from composable_dagster.catalog import workspaces
    from composable_dagster.catalog.secret_box import secret_box_for
    from composable_dagster.dbt_project import dbt_state_dir
    from composable_dagster.demo.dbt_build import build_demo_warehouse
    from composable_dagster.demo.workspace import ensure_demo_workspace
    from composable_dagster.private_files import write_private_file
    from composable_dagster.warehouse import Warehouse

    warehouse = Warehouse(settings.resolved_warehouse_url, read_only=False)
    if args.rebuild or not warehouse.describe_table(schema="analytics", table="customers"):
        built = build_demo_warehouse(
            settings.resolved_warehouse_url,
            customers=args.customers,
            state_dir=dbt_state_dir(settings.home_dir, settings.resolved_warehouse_url),
        )
        _record_dbt_build(settings, seconds=built.dbt_seconds)
    key_file = settings.home_dir / "demo_api_key"
    with catalog_session(settings.resolved_catalog_url) as session:
        demo = ensure_demo_workspace(
            session, columns=warehouse, settings=settings, box=secret_box_for(settings)
        )
        raw_key = key_file.read_text().strip() if key_file.exists() else ""
        stored = workspaces.find_active_key(session, raw_key) if raw_key else None
        if stored is None or stored.workspace_id != demo.workspace.id:
            issued = workspaces.issue_api_key(
                session,
                workspace_id=demo.workspace.id,
                spec=workspaces.ApiKeyCreate(name="demo"),
                created_by=None,
            )
            raw_key = issued.raw_key
            # The demo key is kept (owner-only) so that re-running init prints the same one.
            write_private_file(key_file, raw_key)
        _print_json(
            {
                "workspace_id": demo.workspace.id,
                "workspace_slug": demo.workspace.slug,
                "api_key": raw_key,
                "model_ids": demo.model_ids,
                "relationship_ids": demo.relationship_ids,
                "trait_ids": demo.trait_ids,
                "destination_id": demo.destination_id,
            }
        )
    return 0


def _create_key(args: argparse.Namespace, settings: Settings) -> int:
    from composable_dagster.catalog import workspaces
    from composable_dagster.catalog.db import catalog_session
    from composable_dagster.catalog.tables import Workspace

    _upgrade(settings)
    with catalog_session(settings.resolved_catalog_url) as session:
        workspace = session.get(Workspace, args.workspace) or workspaces.workspace_by_slug(
            session, args.workspace
        )
        if workspace is None:
            print(f"error: no workspace {args.workspace!r}", file=sys.stderr)
            return 1
        issued = workspaces.issue_api_key(
            session,
            workspace_id=workspace.id,
            spec=workspaces.ApiKeyCreate(name=args.name),
            created_by=None,
        )
        _print_json({"workspace_id": workspace.id, "id": issued.row.id, "key": issued.raw_key})
    return 0


def _rotate_secrets(args: argparse.Namespace, settings: Settings) -> int:
    from composable_dagster.catalog.db import catalog_session
    from composable_dagster.catalog.destinations import rotate_secrets
    from composable_dagster.catalog.secret_box import secret_box_for
    from composable_dagster.errors import DomainError

    try:
        _upgrade(settings)
        with catalog_session(settings.resolved_catalog_url) as session:
            rotated = rotate_secrets(session, box=secret_box_for(settings))
    except DomainError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    _print_json({"destinations_reencrypted": rotated})
    return 0


def _create_workspace(args: argparse.Namespace, settings: Settings) -> int:
    from composable_dagster.catalog import workspaces
    from composable_dagster.catalog.db import catalog_session
    from composable_dagster.errors import DomainError

    _upgrade(settings)
    try:
        with catalog_session(settings.resolved_catalog_url) as session:
            workspace = workspaces.create_workspace(session, name=args.name, slug=args.slug)
            issued = workspaces.issue_api_key(
                session,
                workspace_id=workspace.id,
                spec=workspaces.ApiKeyCreate(name="first key"),
                created_by=None,
            )
            _print_json(
                {"workspace_id": workspace.id, "slug": workspace.slug, "api_key": issued.raw_key}
            )
    except DomainError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


def _api(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from composable_dagster.api.app import create_app

    uvicorn.run(create_app(settings), host=args.host, port=args.port)
    return 0


def _record_dbt_build(settings: Settings, *, seconds: float) -> None:
    """Tell Dagster that init's `dbt build` materialized the dbt models, so the UI shows them
    as materialized (not "Never materialized") before any run: a runless materialization
    per model, in the instance `composable serve` uses."""
    import dagster as dg

    from composable_dagster.dbt_project import ensure_manifest, model_asset_keys

    manifest = ensure_manifest(settings.home_dir, settings.resolved_warehouse_url)
    keys = sorted(set(model_asset_keys(manifest).values()))
    with dg.DagsterInstance.from_config(str(dagster_instance_dir(settings))) as instance:
        for key in keys:
            instance.report_runless_asset_event(
                dg.AssetMaterialization(
                    asset_key=dg.AssetKey(list(key)),
                    description="built by `composable init --demo` (dbt build)",
                    metadata={"dbt_build_seconds": dg.MetadataValue.float(round(seconds, 2))},
                )
            )


def dagster_instance_dir(settings: Settings) -> Path:
    """DAGSTER_HOME, made absolute, with our dagster.yaml in it unless one is there."""
    dagster_home = settings.dagster_home.resolve()
    dagster_home.mkdir(parents=True, exist_ok=True)
    instance_file = dagster_home / "dagster.yaml"
    if not instance_file.exists():
        instance_file.write_text(dagster_instance_yaml(settings))
    return dagster_home


def child_environment(settings: Settings, *, host: str, dagster_port: int) -> dict[str, str]:
    """Environment for the two long-running processes: absolute state paths, one Dagster."""
    dagster_home = dagster_instance_dir(settings)
    return {
        **os.environ,
        "COMPOSABLE_HOME": str(settings.home_dir),
        "DAGSTER_HOME": str(dagster_home),
        "COMPOSABLE_DAGSTER_URL": f"http://{host}:{dagster_port}/graphql",
    }


POSTGRES_STORAGE = """
# Run, event and schedule storage in PostgreSQL (dagster-postgres); the URL is read from
# the environment when Dagster starts, never written here.
storage:
  postgres:
    postgres_url:
      env: COMPOSABLE_DAGSTER_PG_URL
"""


def dagster_instance_yaml(settings: Settings) -> str:
    """The repository's dagster.yaml, with PostgreSQL storage when a URL is configured."""
    template = (REPO_ROOT / "dagster.yaml").read_text()
    return template + POSTGRES_STORAGE if settings.dagster_pg_url else template


def serve_workspace_yaml(settings: Settings, *, code_server_sockets: Sequence[Path]) -> str:
    """workspace.yaml with the catalog's location served by our code servers, one per shard
    (defs/code_server.py: each reloads in process), instead of a module Dagster starts."""
    import yaml

    workspace = yaml.safe_load((REPO_ROOT / "workspace.yaml").read_text())
    names = location_names(settings.dagster_location, settings.code_locations)
    entries = []
    for entry in workspace["load_from"]:
        if entry.get("python_module", {}).get("location_name") != settings.dagster_location:
            entries.append(entry)
            continue
        entries.extend(
            {"grpc_server": {"socket": str(sock), "location_name": name}}
            for name, sock in zip(names, code_server_sockets, strict=True)
        )
    workspace["load_from"] = entries
    return yaml.safe_dump(workspace, sort_keys=False)


def code_server_commands(
    settings: Settings, env: Mapping[str, str], *, socket_dir: Path
) -> list[tuple[list[str], dict[str, str], Path]]:
    """(command, environment, socket) of each of the catalog's code servers: one per shard,
    each told which shard it builds (one location: the whole catalog, no shard set)."""
    names = location_names(settings.dagster_location, settings.code_locations)
    servers = []
    for shard, name in enumerate(names):
        sock = socket_dir / f"code-server-{shard}.sock"
        shard_env = dict(env)
        if len(names) > 1:
            shard_env["COMPOSABLE_CODE_LOCATION_SHARD"] = str(shard)
        cmd = [
            sys.executable, "-m", "composable_dagster.defs.code_server",
            "--socket", str(sock), "--location-name", name,
            "--parent-pid", str(os.getpid()),
        ]  # fmt: skip
        servers.append((cmd, shard_env, sock))
    return servers


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    env = child_environment(settings, host=args.host, dagster_port=args.dagster_port)
    # A short private directory (a unix socket's path is limited to 107 bytes), as
    # `dagster dev` makes for its own code servers.
    socket_dir = Path(tempfile.mkdtemp(prefix="composable-"))
    code_servers = code_server_commands(settings, env, socket_dir=socket_dir)
    sockets = [sock for _cmd, _env, sock in code_servers]
    workspace_file = dagster_instance_dir(settings) / "serve-workspace.yaml"
    workspace_file.write_text(serve_workspace_yaml(settings, code_server_sockets=sockets))
    dagster_cmd = [
        sys.executable, "-m", "dagster", "dev",
        "-w", str(workspace_file),
        "-h", args.host, "-p", str(args.dagster_port),
    ]  # fmt: skip
    api_cmd = [
        sys.executable, "-m", "composable_dagster.cli", "api",
        "--host", args.host, "--port", str(args.api_port),
    ]  # fmt: skip
    stop = {"requested": False}

    def _request_stop(_signum: int, _frame: object) -> None:
        stop["requested"] = True

    signal.signal(signal.SIGINT, _request_stop)
    signal.signal(signal.SIGTERM, _request_stop)
    children = [_start_group(cmd, server_env) for cmd, server_env, _sock in code_servers]
    children.append(_start_group(api_cmd, env))
    try:
        # The webserver and daemon load the catalog's locations as they start: start them
        # once every code server listens (each listens once its definitions are loaded).
        while not stop["requested"] and all(c.poll() is None for c in children):
            if all(_listening(sock) for sock in sockets):
                children.append(_start_group(dagster_cmd, env))
                threading.Thread(
                    target=_warm_run_launcher, args=(env["COMPOSABLE_DAGSTER_URL"],), daemon=True
                ).start()
                print(
                    f"Dagster UI: http://{args.host}:{args.dagster_port}  "
                    f"API: http://{args.host}:{args.api_port}/docs  (Ctrl-C stops all)",
                    flush=True,
                )
                break
            time.sleep(0.2)
        while not stop["requested"] and all(c.poll() is None for c in children):
            time.sleep(0.5)
        _stop_groups(children)
    finally:
        shutil.rmtree(socket_dir, ignore_errors=True)
    return 0 if stop["requested"] else 1


def _listening(socket_path: Path) -> bool:
    with (
        contextlib.suppress(OSError),
        socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock,
    ):
        sock.settimeout(1)
        sock.connect(str(socket_path))
        return True
    return False


_RUN_LAUNCHER_QUERY = "{ instance { runLauncher { name } } }"


def _warm_run_launcher(graphql_url: str, *, timeout: float = 300.0) -> None:
    """Ask the webserver for its run launcher once it answers: that builds the launcher,
    whose fork server then imports what runs need (defs/run_launcher.py), so the first
    trigger does not wait seconds for it."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.post(graphql_url, json={"query": _RUN_LAUNCHER_QUERY}, timeout=10)
            return
        except httpx.HTTPError:
            time.sleep(0.5)


def _start_group(cmd: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    # Each child leads its own process group, with SIGINT restored: `dagster dev` started from
    # a background script otherwise inherits an ignored SIGINT and never stops.
    return subprocess.Popen(
        cmd,
        env=env,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def _stop_groups(children: Sequence[subprocess.Popen[bytes]], *, grace: float = 20.0) -> None:
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
        for child in children:
            if child.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.pid, sig)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(c.poll() is None for c in children):
            time.sleep(0.2)
        if all(c.poll() is not None for c in children):
            return


if __name__ == "__main__":
    sys.exit(main())
