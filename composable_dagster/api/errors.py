"""Every error leaves the API as `{"error": "<message naming the field or path>"}`."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from composable_dagster.api.dagster_client import DagsterUnavailableError
from composable_dagster.api.deps import AuthError
from composable_dagster.errors import (
    ConflictError,
    DomainError,
    InvalidInputError,
    NotFoundError,
    WarehouseError,
    WarehouseRejectedError,
)
from composable_dagster.filters import FilterError

log = logging.getLogger(__name__)

_DOMAIN_STATUS: tuple[tuple[type[Exception], int], ...] = (
    (NotFoundError, 404),
    (InvalidInputError, 400),
    (FilterError, 400),
    (ConflictError, 409),
    (WarehouseRejectedError, 400),
    (WarehouseError, 502),
    (DagsterUnavailableError, 503),
)


def error_response(
    status_code: int, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status_code, headers=headers)


def describe_validation_errors(errors: Sequence[Any]) -> str:
    """`name: Field required; filter_tree: ...` — the request location dropped, fields kept."""
    parts = []
    for error in errors[:5]:
        loc = [str(p) for p in error.get("loc", ()) if p not in ("body", "query", "path", "header")]
        # A validator of a whole mapping names the key at fault this way (catalog/traits.py).
        loc += [str(p) for p in (error.get("ctx") or {}).get("loc_suffix", ())]
        where = ".".join(loc) or "body"
        if error.get("type") == "json_invalid":
            where, message = "body", f"invalid JSON ({error.get('ctx', {}).get('error', '')})"
        elif error.get("type") == "missing" and not loc:
            message = "a JSON body is required"
        else:
            message = error.get("msg", "invalid")
        parts.append(f"{where}: {message}")
    return "; ".join(parts)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(400, describe_validation_errors(exc.errors()))

    @app.exception_handler(AuthError)
    async def _auth(_: Request, exc: AuthError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status_code == 401 else None
        return error_response(exc.status_code, str(exc), headers)

    @app.exception_handler(DomainError)
    @app.exception_handler(FilterError)
    async def _domain(_: Request, exc: Exception) -> JSONResponse:
        for kind, status in _DOMAIN_STATUS:
            if isinstance(exc, kind):
                unavailable = isinstance(exc, WarehouseError) and status == 502
                message = f"warehouse: {exc}" if unavailable else str(exc)
                return error_response(status, message)
        return error_response(400, str(exc))

    @app.exception_handler(sa.exc.IntegrityError)
    async def _integrity(_: Request, exc: sa.exc.IntegrityError) -> JSONResponse:
        # Services check references first; this catches a concurrent change in between.
        log.warning("integrity error: %s", exc.orig)
        return error_response(409, "conflict: the change clashes with related data; retry")

    @app.exception_handler(sa.exc.DataError)
    async def _data(_: Request, exc: sa.exc.DataError) -> JSONResponse:
        # The database refused a value the request carried (too long for its column, out of
        # range): the input is at fault, not the server. Specs bound their fields so that
        # this is a last resort; its message cannot name the field.
        log.warning("database refused a value: %s", exc.orig)
        reason = str(exc.orig).strip().splitlines()[0] if str(exc.orig).strip() else "refused"
        return error_response(400, f"database: a value of the request was refused ({reason})")

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return error_response(500, "internal error; see the API log")
