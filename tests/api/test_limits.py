"""Limits on what a request may carry: body size (413), text that is not storable Unicode
(lone surrogates, NUL), and the documented maximum lengths of text fields (400)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from composable_dagster.api.app import create_app
from composable_dagster.catalog.common import (
    MAX_DESCRIPTION_LENGTH,
    MAX_NAME_LENGTH,
    MAX_SQL_LENGTH,
)
from composable_dagster.settings import Settings

from ..conftest import free_port
from .conftest import Tenant, create_demo_models, make_tenant

LIMIT = 1_048_576  # Settings.max_body_bytes by default


def raw_post(client: TestClient, tenant: Tenant, path: str, text: str) -> httpx.Response:
    """POST `text` as the JSON body, byte for byte (json= would re-escape it)."""
    headers = {**tenant.headers, "Content-Type": "application/json"}
    return client.post(tenant.url(path), content=text.encode(), headers=headers)


def test_default_limit_is_documented_one_megabyte(settings: Settings) -> None:
    assert settings.max_body_bytes == LIMIT


def test_body_over_the_limit_is_413(client: TestClient, tenant: Tenant) -> None:
    body = json.dumps({"sql_query": "SELECT 1" + " " * LIMIT})
    response = raw_post(client, tenant, "/models/preview", body)
    assert response.status_code == 413
    assert response.json() == {"error": f"body: larger than the limit of {LIMIT} bytes"}


def test_body_just_under_the_limit_is_read(client: TestClient, tenant: Tenant) -> None:
    create_demo_models(client, tenant)
    padding = LIMIT - 200
    body = json.dumps({"sql_query": "SELECT 1 AS one" + " " * padding})
    response = raw_post(client, tenant, "/models/preview", body)
    assert response.status_code == 200, response.text
    assert response.json()["rows"] == [{"one": 1}]


class _CountingBody:
    """A streamed (chunked) body of `total` bytes that counts what the server pulled."""

    def __init__(self, total: int, chunk: int = 65_536) -> None:
        self.total, self.chunk, self.pulled = total, chunk, 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while self.pulled < self.total:
            self.pulled += self.chunk
            yield b" " * self.chunk


def _post_streamed(
    client: TestClient, tenant: Tenant, body: _CountingBody, headers: dict[str, str]
) -> httpx.Response:
    async def send() -> httpx.Response:
        transport = httpx.ASGITransport(app=client.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as http:
            return await http.post(
                tenant.url("/models/preview"), content=body, headers={**tenant.headers, **headers}
            )

    return asyncio.run(send())


def test_chunked_body_over_the_limit_is_413_without_reading_it_all(
    client: TestClient, tenant: Tenant
) -> None:
    body = _CountingBody(total=20 * LIMIT)
    response = _post_streamed(client, tenant, body, headers={})
    assert "content-length" not in response.request.headers  # sent chunked
    assert response.status_code == 413
    assert "larger than the limit" in response.json()["error"]
    # Reading stopped at the first chunk past the limit.
    assert body.pulled <= LIMIT + body.chunk


def test_body_longer_than_its_content_length_is_413(client: TestClient, tenant: Tenant) -> None:
    body = _CountingBody(total=3 * LIMIT)
    response = _post_streamed(client, tenant, body, headers={"Content-Length": "10"})
    assert response.request.headers["content-length"] == "10"
    assert response.status_code == 413
    assert body.pulled <= LIMIT + body.chunk


@pytest.mark.parametrize(
    ("path", "text", "where"),
    [
        ("/models/preview", '{"sql_query": "SELECT \'\\ud800\'"}', "sql_query"),
        ("/audiences", '{"name": "\\udfff", "parent_model_id": "x", "filter_tree": {}}', "name"),
        (
            "/models/{customers}/estimate-filter",
            '{"filter_tree": {"type": "and", "children": [{"type": "condition", '
            '"condition_type": "property", "column": "country", "operator": "equals", '
            '"value": "US\\ud83d"}]}}',
            "filter_tree.children[0].value",
        ),
        (
            "/destinations/test",
            '{"destination_type": "webhook", "config": {"\\ud800": 1}}',
            "config",
        ),
        ("/relationships", '{"name": "a\\u0000b"}', "name"),
    ],
)
def test_text_that_is_not_valid_unicode_is_400_naming_its_path(
    client: TestClient, tenant: Tenant, path: str, text: str, where: str
) -> None:
    ids = create_demo_models(client, tenant)
    response = raw_post(client, tenant, path.format(**ids), text)
    assert response.status_code == 400, response.text
    message = response.json()["error"]
    assert message.startswith(f"{where}: "), message
    assert "not valid text" in message


def test_a_surrogate_pair_is_ordinary_text(client: TestClient, tenant: Tenant) -> None:
    ids = create_demo_models(client, tenant)
    text = (
        '{"name": "Fans \\ud83d\\ude00", "parent_model_id": "PARENT", "filter_tree": {"type": '
        '"and", "children": [{"type": "condition", "condition_type": "property", "column": '
        '"country", "operator": "equals", "value": "\\ud83c\\uddfa\\ud83c\\uddf8"}]}}'
    ).replace("PARENT", ids["customers"])
    response = raw_post(client, tenant, "/audiences", text)
    assert response.status_code == 201, response.text
    assert response.json()["name"] == "Fans \U0001f600"


def test_nul_in_a_path_id_is_400(client: TestClient, tenant: Tenant) -> None:
    # PostgreSQL text cannot hold a NUL: looking the id up failed with a 500 there.
    response = client.get(tenant.url("/models/a%00b"), headers=tenant.headers)
    assert response.status_code == 400
    assert response.json() == {"error": "path: contains a NUL character"}
    assert client.get(tenant.url("/models/ab"), headers=tenant.headers).status_code == 404


@pytest.fixture
def trait_body(client: TestClient, tenant: Tenant) -> dict:
    """A valid trait create body (customers' order count)."""
    ids = create_demo_models(client, tenant)
    relationship = client.post(
        tenant.url("/relationships"),
        json={"name": "orders", "from_model_id": ids["customers"], "to_model_id": ids["orders"],
              "from_column": "customer_id", "to_column": "customer_id"},
        headers=tenant.headers,
    )  # fmt: skip
    assert relationship.status_code == 201, relationship.text
    return {
        "name": "Order count",
        "parent_model_id": ids["customers"],
        "trait_type": "aggregation",
        "config": {"relationship_id": relationship.json()["id"], "function": "count"},
    }


def test_names_and_descriptions_have_maximum_lengths(
    client: TestClient, tenant: Tenant, trait_body: dict
) -> None:
    def create(**overrides: str) -> httpx.Response:
        body = {**trait_body, **overrides}
        return client.post(tenant.url("/traits"), json=body, headers=tenant.headers)

    long_name = create(name="n" * (MAX_NAME_LENGTH + 1))
    assert long_name.status_code == 400
    assert long_name.json() == {
        "error": f"name: String should have at most {MAX_NAME_LENGTH} characters"
    }
    long_description = create(description="d" * (MAX_DESCRIPTION_LENGTH + 1))
    assert long_description.status_code == 400
    assert long_description.json() == {
        "error": f"description: String should have at most {MAX_DESCRIPTION_LENGTH} characters"
    }
    at_the_limits = create(name="n" * MAX_NAME_LENGTH, description="d" * MAX_DESCRIPTION_LENGTH)
    assert at_the_limits.status_code == 201, at_the_limits.text


def test_trait_config_text_is_bounded_by_key(client: TestClient, tenant: Tenant) -> None:
    ids = create_demo_models(client, tenant)
    sql = "SELECT customer_id AS entity_key, 1 AS value FROM analytics.customers"
    base = {"name": "Flag", "parent_model_id": ids["customers"], "trait_type": "sql"}
    too_long = {**base, "config": {"sql": sql + " " * MAX_SQL_LENGTH}}
    response = client.post(tenant.url("/traits"), json=too_long, headers=tenant.headers)
    assert response.status_code == 400
    assert response.json()["error"] == (
        f"config.sql: String should have at most {MAX_SQL_LENGTH} characters"
    )
    long_column = {**base, "trait_type": "aggregation", "config": {"column": "c" * 201}}
    response = client.post(tenant.url("/traits"), json=long_column, headers=tenant.headers)
    assert response.json()["error"].startswith("config.column: String should have at most 200")
    ok = {**base, "config": {"sql": sql}, "result_type": "number"}
    response = client.post(tenant.url("/traits"), json=ok, headers=tenant.headers)
    assert response.status_code == 201, response.text


@pytest.mark.parametrize(
    ("path", "body", "where"),
    [
        ("/api-keys", {"name": "n" * 201}, "name"),
        ("/relationships/r", {"from_column": "c" * 201}, "from_column"),
        ("/relationships/r", {"description": "d" * 4001}, "description"),
        ("/audiences/a", {"identity_graph_id": "g" * 37}, "identity_graph_id"),
        ("/audiences/a", {"description": "d" * 4001}, "description"),
        ("/audience-syncs/s", {"schedule": "0 " + "1," * 60 + "2 * * *"}, "schedule"),
        (
            "/audience-syncs/s",
            {"field_mapping": [{"source_column": "c" * 201, "destination_field": "e"}]},
            "field_mapping.0.source_column",
        ),
        ("/audience-syncs/s", {"description": "d" * 4001}, "description"),
        ("/traits/t", {"config": {"expression": "1" + " +1" * 40_000}}, "config.expression"),
    ],
)
def test_other_text_fields_are_bounded(
    client: TestClient, tenant: Tenant, path: str, body: dict, where: str
) -> None:
    # The body is checked before the (unknown) id is looked up; creates use POST.
    method = "POST" if path == "/api-keys" else "PUT"
    response = client.request(method, tenant.url(path), json=body, headers=tenant.headers)
    assert response.status_code == 400
    assert response.json()["error"].startswith(f"{where}: String should have at most")


@pytest.fixture
def pg_catalog(
    tmp_path: Path, pg_url: str, warehouse_url: str
) -> Iterator[tuple[TestClient, Tenant]]:
    """The app on a PostgreSQL catalog, whose columns have widths SQLite does not enforce."""
    settings = Settings(
        home=tmp_path / "home",
        catalog_url=pg_url,
        warehouse_url=warehouse_url,
        dagster_url=f"http://127.0.0.1:{free_port()}/graphql",
        warehouse_hold_seconds=0,
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client, make_tenant(settings, "Acme")


def test_a_value_the_catalog_cannot_store_is_400(pg_catalog: tuple[TestClient, Tenant]) -> None:
    # `source_id` is a String(36) column; its spec does not bound it (yet): the database
    # refuses the insert, and that is the request's fault.
    client, tenant = pg_catalog
    body = {"name": "c", "source_schema": "analytics", "source_table": "customers",
            "primary_key_column": "customer_id", "source_id": "s" * 40}  # fmt: skip
    response = client.post(tenant.url("/models"), json=body, headers=tenant.headers)
    assert response.status_code == 400
    assert "error" in response.json()
    body["source_id"] = "s" * 36
    assert client.post(tenant.url("/models"), json=body, headers=tenant.headers).status_code == 201
