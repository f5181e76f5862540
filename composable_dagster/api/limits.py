"""Request text the API accepts, checked once before routing: bounded, valid, storable.

An ASGI middleware, so every endpoint gets the same answer whatever its body model is:
- a body over `Settings.max_body_bytes` is 413, whether its `Content-Length` says so or it
  arrives chunked (or longer than declared); no more than the limit is held in memory;
- a JSON string with a lone UTF-16 surrogate (`"\\ud800"`: valid JSON, but a Python str that
  no driver can encode) or a NUL character (PostgreSQL text cannot hold one) is 400 naming
  its JSON path; so is a NUL in the URL path (path parameters are ids looked up in the
  catalog).
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Iterator
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from composable_dagster.api.errors import error_response

# Only a body with one of these escapes can decode to a string the check refuses, so other
# bodies (nearly all) cost one regex scan and are never parsed twice.
_SUSPECT_ESCAPE = re.compile(rb"\\u(?:[dD][89a-fA-F]|0000)")
_SURROGATE_OR_NUL = re.compile("[\ud800-\udfff\x00]")
# Routes read the bodies of these methods only (a GET's body is never parsed).
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


class RequestGuard:
    """Pure ASGI middleware enforcing the limits above on HTTP requests."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if "\x00" in scope.get("path", ""):
            await error_response(400, "path: contains a NUL character")(scope, receive, send)
            return
        if _declared_length(scope) > self.max_body_bytes:
            await self._too_large(scope, receive, send)
            return
        body = await _read_bounded(receive, self.max_body_bytes)
        if body is _Stop.DISCONNECTED:  # the client went away mid-body: nobody to answer
            return
        if body is _Stop.TOO_LARGE:
            await self._too_large(scope, receive, send)
            return
        problem = invalid_text_path(body) if scope["method"] in _BODY_METHODS else None
        if problem is not None:
            await error_response(400, problem)(scope, receive, send)
            return
        await self.app(scope, _replay(body, receive), send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = f"body: larger than the limit of {self.max_body_bytes} bytes"
        await error_response(413, message)(scope, receive, send)


def invalid_text_path(body: bytes) -> str | None:
    """`<json path>: <why>` for the first string of a JSON body that is not storable text
    (a lone surrogate, a NUL), or None. A body that is not JSON is left to the route."""
    if not _SUSPECT_ESCAPE.search(body):
        return None
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        return None
    for path, text, is_key in _strings(document):
        match = _SURROGATE_OR_NUL.search(text)
        if match is None:
            continue
        where = path or "body"
        what = "a key" if is_key else "text"
        char = match.group()
        reason = "a NUL character" if char == "\x00" else f"a lone surrogate (\\u{ord(char):04x})"
        return f"{where}: {what} contains {reason}, which is not valid text"
    return None


def _strings(document: Any) -> Iterator[tuple[str, str, bool]]:
    """Every string of a parsed JSON document, in document order: (path, string, whether it
    is a key). Iterative: a document as deep as the parser allows must not overflow here."""
    stack: list[tuple[str, Any]] = [("", document)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, str):
            yield path, value, False
        elif isinstance(value, dict):
            for key in value:
                yield path, key, True
            children = [(f"{path}.{key}" if path else key, item) for key, item in value.items()]
            stack.extend(reversed(children))
        elif isinstance(value, list):
            stack.extend(reversed([(f"{path}[{i}]", item) for i, item in enumerate(value)]))


def _declared_length(scope: Scope) -> int:
    for name, value in scope.get("headers", ()):
        if name == b"content-length" and value.isdigit():
            return int(value)
    return 0


class _Stop(enum.Enum):
    DISCONNECTED = "the client disconnected"
    TOO_LARGE = "the body passed the limit"


async def _read_bounded(receive: Receive, limit: int) -> bytes | _Stop:
    """The whole body; TOO_LARGE as soon as the chunks received pass `limit` (the rest is
    never read, so at most one chunk beyond the limit is ever held)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return _Stop.DISCONNECTED
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return _Stop.TOO_LARGE
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that hands the app the body already read, then the client's messages
    (a disconnect, which streaming responses listen for)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay
