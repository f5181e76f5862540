"""The OpenAPI document, made to tell the truth about errors and credentials.

FastAPI documents a 422 on every operation; this API never answers 422 (its validation
errors are 400, see api/errors.py). `truthful_openapi` replaces it, in one place, by the
statuses each operation can answer, all with the `ErrorResponse` body `{"error": "..."}`.
Which statuses apply follows from the route: its path (a resource id can be unknown), its
body and query, its dependencies (auth, a warehouse that can fail), and two short lists:
the routes that call Dagster and those that can conflict. The credentials become security
schemes (Bearer key + `X-Workspace-ID`), so Swagger UI's "Authorize" and generated clients
send them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute

from composable_dagster.api.deps import get_caller, get_warehouse

ERROR_SCHEMA_NAME = "ErrorResponse"
BEARER = "bearerAuth"
WORKSPACE = "workspaceId"

# Routes that answer 503 when Dagster cannot be reached (reads of syncs do without it, and
# catalog writes only log a failed reload).
CALLS_DAGSTER = frozenset({"trigger_sync", "list_runs", "get_run"})
# Routes that answer 409: a name already taken, a delete refused while something depends on
# the row, or a row it references deleted concurrently (the catalog's foreign keys).
CONFLICTS = frozenset(
    f"{verb}_{resource}"
    for resource, verbs in (
        ("model", ("create", "update", "delete")),
        ("relationship", ("create", "update", "delete")),
        ("trait", ("create", "update", "delete")),
        ("destination", ("create", "update", "delete")),
        ("audience", ("create", "update", "delete")),
        ("sync", ("create", "update")),
        ("split", ("create", "delete")),
    )
    for verb in verbs
)

_SECURITY_SCHEMES = {
    BEARER: {
        "type": "http",
        "scheme": "bearer",
        "description": "An API key of the workspace: `Authorization: Bearer cdk_...`",
    },
    WORKSPACE: {
        "type": "apiKey",
        "in": "header",
        "name": "X-Workspace-ID",
        "description": "The workspace id of the path, on every workspace-scoped operation",
    },
}

_ERROR_SCHEMA = {
    "title": ERROR_SCHEMA_NAME,
    "type": "object",
    "properties": {
        "error": {
            "type": "string",
            "description": "What went wrong, starting with the field or JSON path at fault",
        }
    },
    "required": ["error"],
    "additionalProperties": False,
}


@dataclass(frozen=True, slots=True)
class Operation:
    """What the error statuses of one route depend on."""

    name: str
    method: str
    path_params: frozenset[str]
    has_body: bool
    has_query: bool
    calls: frozenset[Callable[..., Any]]

    @property
    def workspace_scoped(self) -> bool:
        return get_caller in self.calls

    @property
    def names_a_resource(self) -> bool:
        return bool(self.path_params - {"id"})


@dataclass(frozen=True, slots=True)
class ErrorStatus:
    status: int
    description: str
    applies: Callable[[Operation], bool]


ERROR_STATUSES = (
    ErrorStatus(
        400,
        "Invalid input: malformed JSON, a missing, mistyped or too long field, a value the "
        "catalog or the warehouse rejects, text that is not valid Unicode, a missing "
        "X-Workspace-ID",
        lambda op: op.workspace_scoped or op.has_body or op.has_query or bool(op.path_params),
    ),
    ErrorStatus(401, "Missing, malformed, unknown or revoked API key", lambda op: True),
    ErrorStatus(
        403,
        "The API key or X-Workspace-ID is for another workspace than the path's",
        lambda op: op.workspace_scoped,
    ),
    ErrorStatus(
        404, "Unknown id (another workspace's ids included)", lambda op: op.names_a_resource
    ),
    ErrorStatus(
        409,
        "A name already used, a delete blocked by what depends on it, or a concurrent change",
        lambda op: op.name in CONFLICTS,
    ),
    ErrorStatus(413, "Request body over the size limit", lambda op: op.has_body),
    ErrorStatus(
        502,
        "The warehouse failed for reasons of its own (e.g. unreachable)",
        lambda op: get_warehouse in op.calls,
    ),
    ErrorStatus(503, "Dagster could not be reached or failed", lambda op: op.name in CALLS_DAGSTER),
)


def install_openapi(app: FastAPI, routes: Iterable[BaseRoute]) -> None:
    """Serve the truthful document at `app.openapi_url` (built once, on first request).

    `routes` are the API's routes as their routers declare them (full paths): the app's
    own route list holds included routers, whose shape is FastAPI's internal business.
    """
    declared = list(routes)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
                tags=app.openapi_tags,
                servers=app.servers,
            )
            app.openapi_schema = truthful_openapi(spec, declared)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def truthful_openapi(spec: dict[str, Any], routes: Iterable[BaseRoute]) -> dict[str, Any]:
    """`spec` with each operation's real error statuses and security instead of 422s."""
    components = spec.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    schemas[ERROR_SCHEMA_NAME] = _ERROR_SCHEMA
    components["securitySchemes"] = _SECURITY_SCHEMES
    reference = {"$ref": f"#/components/schemas/{ERROR_SCHEMA_NAME}"}
    error_body = {"content": {"application/json": {"schema": reference}}}
    for route, operation in _operations(routes):
        document = spec["paths"][route.path_format][operation.method.lower()]
        responses = document.setdefault("responses", {})
        responses.pop("422", None)
        for status in ERROR_STATUSES:
            if status.applies(operation):
                responses[str(status.status)] = {"description": status.description, **error_body}
        credentials = {BEARER: [], WORKSPACE: []} if operation.workspace_scoped else {BEARER: []}
        document["security"] = [credentials]
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    return spec


def _operations(routes: Iterable[BaseRoute]) -> Iterator[tuple[APIRoute, Operation]]:
    for route in routes:
        if not isinstance(route, APIRoute) or not route.include_in_schema:
            continue
        dependants = list(_walk(route.dependant))
        for method in sorted(route.methods):
            yield (
                route,
                Operation(
                    name=route.name,
                    method=method,
                    path_params=frozenset(p.alias for d in dependants for p in d.path_params),
                    has_body=route.body_field is not None,
                    has_query=any(d.query_params for d in dependants),
                    calls=frozenset(d.call for d in dependants if d.call is not None),
                ),
            )


def _walk(dependant: Dependant) -> Iterator[Dependant]:
    """The route's dependant and all its sub-dependencies (auth, session, warehouse...)."""
    yield dependant
    for sub in dependant.dependencies:
        yield from _walk(sub)
