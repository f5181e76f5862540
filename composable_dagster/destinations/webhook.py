"""The `webhook` destination: one signed JSON request per batch to an HTTP(S) endpoint.

Body of each request (`Content-Type: application/json`):

    {"sync_id": ..., "run_id": ..., "mode": "mirror", "operation": "add",
     "idempotency_key": ..., "records": [{"key": ..., "operation": ..., "data": {...}}]}

with headers `Idempotency-Key: <idempotency_key>` and, when a signing secret is configured,
`X-Composable-Signature: sha256=<hex HMAC-SHA256 of the raw body>`. The engine cuts batches of
the config's `batch_size`, so each is one request; a larger RecordBatch (from a caller of the
connector other than the engine) is sent as several requests whose idempotency keys are the
batch's key suffixed `:<part>/<parts>`, and when one of them fails for good the ones before it
stay confirmed (`DeliveryError.confirmed`).

Delivery is at-least-once: a 2xx confirms every record of the request. A 429 waits for
`Retry-After` (seconds or an HTTP date, at most 300 s; backoff when absent); 408, 5xx,
timeouts and broken connections retry with exponential backoff and jitter; any other status
fails the request's records with `HTTP <code>: <body>` and is not retried. When retries are
exhausted the destination fails (DeliveryError) and the run stops, and the next run sends
what was not confirmed again. The idempotency key is one per (sync, run, operation, batch):
a receiver that de-duplicates on `Idempotency-Key` applies a retried request once, and never
mistakes a later run's identical change (a member who left and came back) for a duplicate.
Records carry their key and operation, so applying a re-sent one again changes nothing.

Header values and the signing secret are secrets: they appear in no message, repr or log.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import hashlib
import hmac
import json
import random
import re
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable
from typing import Any, Literal

import httpx
import pydantic

from composable_dagster.destinations.base import (
    Capabilities,
    ConnectionCheck,
    Connector,
    DeliveryError,
    DeliveryResult,
    DestinationType,
    RecordBatch,
    SyncContext,
)
from composable_dagster.destinations.retry import Backoff
from composable_dagster.spec.sync import SyncMode

SIGNATURE_HEADER = "X-Composable-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"
MAX_RETRY_AFTER_SECONDS = 300.0
CHECK_TIMEOUT_SECONDS = 10.0
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,256}")
_HEADER_VALUE = re.compile(
    r"[\x20-\x7e\t]{0,8192}"
)  # a connection test gives up after this long, whatever happens
# Headers the connector owns; a configured value would break signing or de-duplication.
_RESERVED_HEADERS = frozenset(
    h.lower()
    for h in (SIGNATURE_HEADER, IDEMPOTENCY_HEADER, "Content-Type", "Content-Length", "Host")
)


class WebhookConfig(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    # repr=False: query strings often carry tokens; `describe()` is the safe rendering.
    url: str = pydantic.Field(
        repr=False, max_length=2_000, description="http(s) endpoint receiving the batches"
    )
    method: Literal["POST", "PUT", "PATCH"] = "POST"
    # repr=False: values are typically credentials (Authorization, API keys).
    headers: dict[str, str] = pydantic.Field(default_factory=dict, repr=False)
    signing_secret: str | None = pydantic.Field(default=None, min_length=1, repr=False)
    batch_size: int = pydantic.Field(default=500, ge=1, le=10_000)
    timeout_seconds: float = pydantic.Field(default=30.0, gt=0, le=300)
    max_retries: int = pydantic.Field(default=5, ge=0, le=20)

    @pydantic.field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urllib.parse.urlsplit(value)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        try:
            parts.port  # noqa: B018 - urlsplit checks the port only when asked
        except ValueError as err:
            raise ValueError(f"not a valid port: {err}") from err
        if any(c in value for c in "\r\n\t ") or not value.isascii():
            raise ValueError("must not contain spaces, control or non-ASCII characters")
        return value

    @pydantic.field_validator("headers")
    @classmethod
    def _valid_headers(cls, value: dict[str, str]) -> dict[str, str]:
        reserved = sorted(h for h in value if h.lower() in _RESERVED_HEADERS)
        if reserved:
            raise ValueError(f"header(s) {', '.join(reserved)} are set by the connector")
        for name, text in value.items():
            # RFC 9110: a name is a token; a value is visible ASCII, spaces and tabs (a CR
            # or LF would split the request; httpx refuses non-ASCII only when sending).
            if _HEADER_NAME.fullmatch(name) is None:
                raise ValueError(f"{name!r} is not a valid header name")
            if _HEADER_VALUE.fullmatch(text) is None:
                raise ValueError(f"the value of header {name!r} must be printable ASCII")
        return value

    def describe(self) -> str:
        """How errors name the destination: no credentials, no query string."""
        parts = urllib.parse.urlsplit(self.url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
        return f"webhook {self.method} {parts.scheme}://{host}{port}{parts.path}"


def sign(body: bytes, secret: str) -> str:
    """The `X-Composable-Signature` value of `body`: `sha256=<hex HMAC-SHA256>`."""
    digest = hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def retry_after_seconds(value: str | None, *, now: dt.datetime) -> float | None:
    """Seconds a `Retry-After` header asks to wait (capped), or None when absent/invalid."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        seconds = float(value)
    else:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:  # HTTP dates are GMT by definition
            when = when.replace(tzinfo=dt.UTC)
        seconds = (when - now).total_seconds()
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_SECONDS)


def _left(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("timed out")
    return left


def _resolve(host: str, port: int, *, timeout: float) -> tuple[str, int]:
    """The first address of `host`, or TimeoutError: getaddrinfo has no timeout of its own
    (a resolver that never answers would hold the request for as long as it likes)."""
    found: list[tuple[str, int]] = []
    failure: list[OSError] = []

    def lookup() -> None:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            found.append(infos[0][4][:2])
        except OSError as err:
            failure.append(err)

    worker = threading.Thread(target=lookup, name=f"resolve {host}", daemon=True)
    worker.start()
    worker.join(max(timeout, 0))
    if failure:
        raise failure[0]
    if not found:
        raise TimeoutError(f"resolving {host} took longer than {timeout:.0f} s")
    return found[0]


def _json_default(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    return str(value)  # Decimal, timedelta: their text is exact


class WebhookConnector(Connector):
    """Sends one run's batches; see the module docstring. `sleep` is injectable for tests."""

    def __init__(
        self,
        *,
        config: WebhookConfig,
        context: SyncContext,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.context = context
        self.sleep = sleep
        self.backoff = Backoff(base=0.5, factor=2.0, cap=60.0)
        self._rng = rng or random.Random()
        self._client = httpx.Client(
            timeout=config.timeout_seconds,
            headers={"User-Agent": "composable-dagster-webhook", **config.headers},
        )

    def deliver(self, batch: RecordBatch) -> DeliveryResult:
        keys = list(batch.keys)
        values = batch.rows.to_pylist()
        size = self.config.batch_size
        parts = max(1, -(-len(keys) // size))
        confirmed: list[str] = []
        failed: dict[str, str] = {}
        for part in range(parts):
            chunk = slice(part * size, (part + 1) * size)
            idempotency_key = (
                batch.idempotency_key
                if parts == 1
                else f"{batch.idempotency_key}:{part + 1}/{parts}"
            )
            records = [
                {"key": key, "operation": str(batch.operation), "data": row}
                for key, row in zip(keys[chunk], values[chunk], strict=True)
            ]
            try:
                reason = self._send(records, operation=str(batch.operation), key=idempotency_key)
            except DeliveryError as err:
                # The earlier requests were applied: the engine must commit them.
                raise DeliveryError(
                    err.destination, err.cause, confirmed=confirmed, failed=failed
                ) from None
            if reason is None:
                confirmed += keys[chunk]
            else:
                failed.update(dict.fromkeys(keys[chunk], reason))
        return DeliveryResult(confirmed=confirmed, failed=failed)

    def _send(self, records: list[dict[str, Any]], *, operation: str, key: str) -> str | None:
        """POST one request with retries; None when confirmed, else the rejection reason.

        Raises:
            DeliveryError: retries exhausted on 429, 408, 5xx or a transport failure.
        """
        payload = {
            "sync_id": self.context.sync_id,
            "run_id": self.context.run_id,
            "mode": str(self.context.mode),
            "operation": operation,
            "idempotency_key": key,
            "records": records,
        }
        body = json.dumps(
            payload, default=_json_default, ensure_ascii=False, separators=(",", ":")
        ).encode("utf-8")
        headers = {"Content-Type": "application/json", IDEMPOTENCY_HEADER: key}
        if self.config.signing_secret is not None:
            headers[SIGNATURE_HEADER] = sign(body, self.config.signing_secret)
        attempts = self.config.max_retries + 1
        last_error = ""
        for attempt in range(attempts):
            wait = self.backoff.delay(attempt, rng=self._rng)
            try:
                response = self._client.request(
                    self.config.method, self.config.url, content=body, headers=headers
                )
            except httpx.TimeoutException as err:
                last_error = (
                    f"timed out after {self.config.timeout_seconds:g} s ({type(err).__name__})"
                )
            except httpx.TransportError as err:
                last_error = f"{type(err).__name__}: {err}"
            else:
                status = response.status_code
                if 200 <= status < 300:
                    return None
                last_error = f"HTTP {status}: {response.text[:200]}"
                if status == 429:
                    now = dt.datetime.now(dt.UTC)
                    asked = retry_after_seconds(response.headers.get("Retry-After"), now=now)
                    wait = wait if asked is None else asked
                elif status != 408 and status < 500:
                    return last_error
            if attempt + 1 < attempts:
                self.sleep(wait)
        raise DeliveryError(
            self.config.describe(), f"{last_error} (gave up after {attempts} attempts)"
        )

    def close(self, *, success: bool) -> None:
        self._client.close()


class WebhookDestination(DestinationType):
    name = "webhook"
    config_model = WebhookConfig
    secret_fields = ("headers.*", "signing_secret")
    url_fields = ("url",)  # https://user:password@host/hook?token=...
    capabilities = Capabilities(modes=frozenset(SyncMode), batch_size=500)

    def batch_size(self, config: pydantic.BaseModel) -> int:
        assert isinstance(config, WebhookConfig)
        return config.batch_size

    def target(self, config: pydantic.BaseModel) -> tuple[str, ...]:
        """The endpoint; method, headers, signing and timeouts are how it is called."""
        assert isinstance(config, WebhookConfig)
        return (config.url,)

    def check_connection(self, config: pydantic.BaseModel) -> ConnectionCheck:
        """Resolve the host and open a TCP connection (and TLS handshake for https).

        No HTTP request is sent: a receiver may treat any request to its endpoint as data
        (or count it against a quota), and there is no request every receiver ignores.
        """
        assert isinstance(config, WebhookConfig)
        parts = urllib.parse.urlsplit(config.url)
        host = parts.hostname or ""
        port = parts.port or (443 if parts.scheme == "https" else 80)
        deadline = time.monotonic() + min(config.timeout_seconds, CHECK_TIMEOUT_SECONDS)
        try:
            address = _resolve(host, port, timeout=deadline - time.monotonic())
            with socket.create_connection(address, timeout=_left(deadline)) as sock:
                if parts.scheme == "https":
                    sock.settimeout(_left(deadline))  # the handshake shares the deadline
                    context = ssl.create_default_context()
                    with context.wrap_socket(sock, server_hostname=host):
                        pass
        except (OSError, ssl.SSLError) as err:
            reason = getattr(err, "strerror", None) or str(err) or type(err).__name__
            return ConnectionCheck(ok=False, message=f"cannot reach {host}:{port}: {reason}")
        return ConnectionCheck(ok=True, message=f"{host}:{port} accepts connections")

    def open(
        self,
        config: pydantic.BaseModel,
        *,
        context: SyncContext,
        sleep: Callable[[float], None] = time.sleep,
    ) -> WebhookConnector:
        assert isinstance(config, WebhookConfig)
        return WebhookConnector(config=config, context=context, sleep=sleep)
