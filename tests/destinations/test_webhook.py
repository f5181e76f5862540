"""The webhook destination against a real HTTP server on 127.0.0.1 that fails on demand."""

from __future__ import annotations

import datetime as dt
import email.utils
import hashlib
import hmac
import time

import pyarrow as pa
import pytest

from composable_dagster.destinations import DESTINATION_TYPES
from composable_dagster.destinations.base import (
    DeliveryError,
    Operation,
    RecordBatch,
    SyncContext,
    SyncMode,
)
from composable_dagster.destinations.retry import Backoff
from composable_dagster.destinations.webhook import (
    WebhookConfig,
    WebhookConnector,
    WebhookDestination,
    retry_after_seconds,
)
from composable_dagster.errors import InvalidInputError
from tests.conftest import free_port
from tests.scopes import ANYWHERE
from tests.webhook_receiver import Receiver

DESTINATION = WebhookDestination()
CONTEXT = SyncContext(sync_id="sync-1", run_id="run-1", mode=SyncMode.MIRROR)
SECRET = "s3cr3t-signing-key"
TOKEN = "Bearer super-secret-token"


def make_config(url: str, **overrides: object) -> WebhookConfig:
    raw = {"url": url, "headers": {"Authorization": TOKEN}, "signing_secret": SECRET}
    config = DESTINATION.parse_config({**raw, **overrides}, scope=ANYWHERE)
    assert isinstance(config, WebhookConfig)
    return config


def open_connector(url: str, sleeps: list[float] | None = None, **overrides: object):
    connector = DESTINATION.open(make_config(url, **overrides), context=CONTEXT)
    if sleeps is not None:
        connector.sleep = sleeps.append
    return connector


def make_batch(keys: list[str], operation: Operation = Operation.ADD) -> RecordBatch:
    rows = pa.table(
        {
            "email": [f"{k}@example.com" for k in keys],
            "points": pa.array(range(len(keys)), pa.int64()),
            "seen": pa.array(
                [dt.datetime(2024, 1, 1, tzinfo=dt.UTC)] * len(keys), pa.timestamp("us", "UTC")
            ),
        }
    )
    return RecordBatch(
        operation=operation, keys=keys, rows=rows, idempotency_key=f"ik-{operation}-{keys[0]}"
    )


def test_batch_is_one_signed_request_with_its_idempotency_key(receiver: Receiver) -> None:
    connector = open_connector(receiver.url)
    result = connector.deliver(make_batch(["c1", "c2", "c3"], Operation.UPDATE))
    connector.close(success=True)
    assert result.confirmed == ["c1", "c2", "c3"] and not result.failed

    [request] = receiver.requests
    assert request.method == "POST" and request.path == "/hooks/audience?token=q"
    assert request.headers["idempotency-key"] == "ik-update-c1"
    assert request.headers["authorization"] == TOKEN
    assert request.headers["content-type"] == "application/json"
    expected = hmac.new(SECRET.encode(), request.body, hashlib.sha256).hexdigest()
    assert request.headers["x-composable-signature"] == f"sha256={expected}"
    assert request.json() == {
        "sync_id": "sync-1",
        "run_id": "run-1",
        "mode": "mirror",
        "operation": "update",
        "idempotency_key": "ik-update-c1",
        "records": [
            {
                "key": f"c{i + 1}",
                "operation": "update",
                "data": {
                    "email": f"c{i + 1}@example.com",
                    "points": i,
                    "seen": "2024-01-01T00:00:00+00:00",
                },
            }
            for i in range(3)
        ],
    }


def test_server_errors_are_retried_with_backoff(receiver: Receiver) -> None:
    receiver.script.extend([("status", 500, {}, b"boom"), ("status", 503, {}, b"busy")])
    sleeps: list[float] = []
    connector = open_connector(receiver.url, sleeps)
    assert connector.deliver(make_batch(["a", "b"])).confirmed == ["a", "b"]
    assert len(receiver.requests) == 3
    assert len({r.body for r in receiver.requests}) == 1  # the very same request, re-sent
    assert {r.headers["idempotency-key"] for r in receiver.requests} == {"ik-add-a"}
    # Equal jitter: retry n waits between half and all of 0.5 * 2**n seconds.
    assert 0.25 <= sleeps[0] <= 0.5 and 0.5 <= sleeps[1] <= 1.0


def test_429_waits_for_retry_after(receiver: Receiver) -> None:
    receiver.script.append(("status", 429, {"Retry-After": "1"}, b"slow down"))
    connector = open_connector(receiver.url)  # the real time.sleep
    started = time.monotonic()
    assert connector.deliver(make_batch(["a"])).confirmed == ["a"]
    first, second = receiver.requests
    assert second.at - first.at >= 1.0
    assert time.monotonic() - started < 5


def test_429_with_an_http_date(receiver: Receiver) -> None:
    when = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=20)
    date = email.utils.format_datetime(when, usegmt=True)
    receiver.script.append(("status", 429, {"Retry-After": date}, b""))
    sleeps: list[float] = []
    connector = open_connector(receiver.url, sleeps)
    assert connector.deliver(make_batch(["a"])).confirmed == ["a"]
    assert 17 <= sleeps[0] <= 20


def test_timeouts_are_retried(receiver: Receiver) -> None:
    receiver.script.append(("sleep", 1.0))
    sleeps: list[float] = []
    connector = open_connector(receiver.url, sleeps, timeout_seconds=0.3)
    started = time.monotonic()
    assert connector.deliver(make_batch(["a"])).confirmed == ["a"]
    assert len(receiver.requests) == 2 and len(sleeps) == 1
    assert time.monotonic() - started < 1.0  # the client gave up on the slow answer


def test_dropped_connections_are_retried(receiver: Receiver) -> None:
    receiver.script.extend([("status", 200, {}, b"ok"), ("drop",), ("drop",)])
    sleeps: list[float] = []
    connector = open_connector(receiver.url, sleeps)
    assert connector.deliver(make_batch(["a"])).confirmed == ["a"]
    assert connector.deliver(make_batch(["b"])).confirmed == ["b"]
    assert len(receiver.requests) == 4 and len(sleeps) == 2


def test_client_errors_fail_the_records_without_retry(receiver: Receiver) -> None:
    receiver.script.append(("status", 400, {}, b"bad email: " + b"x" * 500))
    sleeps: list[float] = []
    connector = open_connector(receiver.url, sleeps)
    result = connector.deliver(make_batch(["a", "b"]))
    assert result.confirmed == [] and set(result.failed) == {"a", "b"}
    reason = result.failed["a"]
    assert reason.startswith("HTTP 400: bad email: xxx") and len(reason) == len("HTTP 400: ") + 200
    assert len(receiver.requests) == 1 and sleeps == []


def test_exhausted_retries_raise_without_leaking_secrets(receiver: Receiver) -> None:
    receiver.script.extend([("status", 502, {}, b"bad gateway")] * 3)
    sleeps: list[float] = []
    connector = open_connector(receiver.url, sleeps, max_retries=2)
    with pytest.raises(DeliveryError) as err:
        connector.deliver(make_batch(["a"]))
    message = str(err.value)
    assert "HTTP 502: bad gateway" in message and "3 attempts" in message
    assert "webhook POST http://127.0.0.1" in message
    for secret in (TOKEN, SECRET, "token=q"):
        assert secret not in message
        assert secret not in repr(connector.config)
    assert len(receiver.requests) == 3 and len(sleeps) == 2


def test_large_batches_are_split_with_derived_idempotency_keys(receiver: Receiver) -> None:
    connector = open_connector(receiver.url, method="PUT", batch_size=2)
    keys = ["a", "b", "c", "d", "e"]
    assert connector.deliver(make_batch(keys)).confirmed == keys
    assert [r.method for r in receiver.requests] == ["PUT"] * 3
    assert [r.headers["idempotency-key"] for r in receiver.requests] == [
        "ik-add-a:1/3",
        "ik-add-a:2/3",
        "ik-add-a:3/3",
    ]
    assert [len(r.json()["records"]) for r in receiver.requests] == [2, 2, 1]
    assert DESTINATION.batch_size(connector.config) == 2


def test_a_part_failing_for_good_keeps_the_parts_before_it_confirmed(
    receiver: Receiver,
) -> None:
    """Request 3 of 4 exhausts its retries: the error says requests 1 and 2 were applied
    (the engine commits them), and which of them the receiver rejected."""
    receiver.script.extend(
        [("status", 200, {}, b"ok"), ("status", 422, {}, b"bad"), ("status", 503, {}, b"down")]
    )
    connector = open_connector(receiver.url, batch_size=2, max_retries=0)
    with pytest.raises(DeliveryError, match="HTTP 503") as raised:
        connector.deliver(make_batch(["a", "b", "c", "d", "e", "f", "g"]))
    assert raised.value.confirmed == ("a", "b")
    assert raised.value.failed == {"c": "HTTP 422: bad", "d": "HTTP 422: bad"}
    assert len(receiver.requests) == 3  # request 4 was never sent


def test_unsigned_requests_carry_no_signature(receiver: Receiver) -> None:
    connector = open_connector(receiver.url, signing_secret=None, headers={})
    connector.deliver(make_batch(["a"]))
    assert "x-composable-signature" not in receiver.requests[0].headers


def test_check_connection_connects_without_sending_a_request(receiver: Receiver) -> None:
    assert DESTINATION.check_connection(make_config(receiver.url)).ok
    assert receiver.requests == []
    closed = DESTINATION.check_connection(make_config(f"http://127.0.0.1:{free_port()}/x"))
    assert not closed.ok and "cannot reach" in closed.message


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"url": "ftp://example.com/x"}, "config.url"),
        ({"url": "http:///nohost"}, "config.url"),
        ({"url": "https://e.com", "method": "GET"}, "config.method"),
        ({"url": "https://e.com", "batch_size": 10_001}, "config.batch_size"),
        ({"url": "https://e.com", "headers": {"idempotency-key": "x"}}, "config.headers"),
        ({"url": "https://e.com", "signing_secret": ""}, "config.signing_secret"),
    ],
)
def test_invalid_configs_name_their_field(raw: dict, field: str) -> None:
    with pytest.raises(InvalidInputError) as err:
        DESTINATION.parse_config(raw, scope=ANYWHERE)
    assert err.value.field == field


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("0", 0.0),
        ("7", 7.0),
        ("100000", 300.0),  # capped
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),  # in the past
        ("Thu, 01 Jan 2099 00:00:00 GMT", 300.0),
        ("soon", None),
    ],
)
def test_retry_after_parsing(header: str | None, expected: float | None) -> None:
    assert retry_after_seconds(header, now=dt.datetime.now(dt.UTC)) == expected


@pytest.mark.parametrize("attempt", range(8))
def test_backoff_grows_exponentially_with_bounded_jitter(attempt: int) -> None:
    backoff = Backoff(base=0.5, factor=2.0, cap=10.0)
    ceiling = min(10.0, 0.5 * 2**attempt)
    delays = [backoff.delay(attempt) for _ in range(50)]
    assert all(ceiling / 2 <= d <= ceiling for d in delays)


def test_registered_with_all_modes() -> None:
    assert DESTINATION_TYPES["webhook"].capabilities.modes == frozenset(SyncMode)
    assert isinstance(open_connector("https://example.com/x"), WebhookConnector)
