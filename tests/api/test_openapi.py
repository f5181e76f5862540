"""The OpenAPI document and its two UIs: offline pages, truthful error statuses, security."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from composable_dagster.api.app import ROUTERS
from composable_dagster.api.openapi import CALLS_DAGSTER, CONFLICTS

from .conftest import Tenant

ERROR_STATUSES = {"400", "401", "403", "404", "409", "413", "502", "503"}
WS = "/api/v1/workspaces/{id}"


class _References(HTMLParser):
    """Every URL a page loads: src/href attributes and the spec URL in inline scripts."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._in_script = tag == "script"
        for name, value in attrs:
            if name in ("src", "href", "spec-url") and value:
                self.urls.append(value)

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.urls += re.findall(r"url:\s*'([^']+)'", data)


@pytest.fixture
def spec(client: TestClient) -> dict:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    return response.json()


def _operations(spec: dict) -> list[tuple[str, str, dict]]:
    return [
        (method.upper(), path, operation)
        for path, methods in spec["paths"].items()
        for method, operation in methods.items()
    ]


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_load_only_same_origin_assets(client: TestClient, page: str) -> None:
    response = client.get(page)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    html = response.text
    # No CDN, no Google fonts, no validator badge: nothing outside this server.
    assert not re.search(r"https?://|//[a-z0-9.-]+\.[a-z]{2,}/", html), html
    parser = _References()
    parser.feed(html)
    # JavaScript's type is text/javascript (RFC 9239) or, where a library registered the
    # older name in Python's mimetypes table, application/javascript: both are right.
    kinds = {
        ".js": ("text/javascript", "application/javascript"),
        ".css": ("text/css",),
        ".png": ("image/png",),
        ".json": ("application/json",),
    }
    assert len(parser.urls) >= 3, parser.urls
    for url in parser.urls:
        assert url.startswith("/") and not url.startswith("//"), url
        asset = client.get(url)
        assert asset.status_code == 200, url
        expected = next(types for suffix, types in kinds.items() if url.endswith(suffix))
        assert asset.headers["content-type"].startswith(expected), (url, asset.headers)
        assert len(asset.content) > 100, url


def test_swagger_ui_is_the_bundled_version_5(client: TestClient) -> None:
    bundle = client.get("/docs-static/swagger-ui-bundle.js").text
    assert re.search(r'version:\s*"5\.|"5\.\d+\.\d+"', bundle[:2_000_000])


def test_no_operation_documents_422(spec: dict) -> None:
    assert '"422"' not in str(spec).replace("'", '"')
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    for method, path, operation in _operations(spec):
        assert "422" not in operation["responses"], (method, path)


def test_errors_are_documented_with_the_error_schema(spec: dict) -> None:
    schema = spec["components"]["schemas"]["ErrorResponse"]
    assert schema["type"] == "object" and schema["required"] == ["error"]
    assert schema["properties"]["error"]["type"] == "string"
    assert schema["additionalProperties"] is False
    reference = {"$ref": "#/components/schemas/ErrorResponse"}
    for method, path, operation in _operations(spec):
        errors = {s for s in operation["responses"] if s >= "400"}
        assert "401" in errors, (method, path)
        assert errors <= ERROR_STATUSES, (method, path, errors)
        for status in errors:
            content = operation["responses"][status]["content"]["application/json"]
            assert content["schema"] == reference, (method, path, status)


# (method, path): statuses it must document, and statuses it must not.
TRUTH = [
    ("GET", "/api/v1/workspaces", {"401"}, {"400", "403", "404", "413", "502", "503"}),
    ("GET", f"{WS}/models", {"400", "401", "403"}, {"404", "409", "413", "502"}),
    ("POST", f"{WS}/models", {"400", "409", "413", "502"}, {"404", "503"}),
    ("GET", f"{WS}/models/{{model_id}}", {"404"}, {"409", "413", "502"}),
    ("DELETE", f"{WS}/models/{{model_id}}", {"404", "409"}, {"413", "502"}),
    ("POST", f"{WS}/models/preview", {"400", "413", "502"}, {"404", "409"}),
    ("POST", f"{WS}/audiences/{{aud_id}}/estimate", {"404", "502"}, {"413", "409", "503"}),
    ("POST", f"{WS}/audiences", {"400", "409", "413"}, {"404", "502", "503"}),
    ("DELETE", f"{WS}/api-keys/{{key_id}}", {"404"}, {"409", "413"}),
    ("GET", f"{WS}/audience-syncs/{{sync_id}}", {"404"}, {"503", "502"}),
    # Its body ({"override_safety": true}) is optional: 400 and 413 apply when one is sent.
    ("POST", f"{WS}/audience-syncs/{{sync_id}}/trigger", {"400", "404", "413", "503"}, {"409"}),
    ("GET", f"{WS}/audience-syncs/{{sync_id}}/runs/{{run_id}}", {"404", "503"}, {"409"}),
    ("DELETE", f"{WS}/audiences/{{aud_id}}/splits/{{split_id}}", {"404", "409"}, {"413"}),
]


@pytest.mark.parametrize(("method", "path", "documented", "absent"), TRUTH)
def test_each_operation_documents_the_statuses_it_can_answer(
    spec: dict, method: str, path: str, documented: set[str], absent: set[str]
) -> None:
    responses = spec["paths"][path][method.lower()]["responses"]
    assert documented <= set(responses), sorted(responses)
    assert not absent & set(responses), sorted(responses)


def test_status_tables_name_real_routes() -> None:
    names = {
        route.name for router in ROUTERS for route in router.routes if isinstance(route, APIRoute)
    }
    assert names >= CALLS_DAGSTER
    assert names >= CONFLICTS


def test_credentials_are_security_schemes_not_parameters(spec: dict) -> None:
    schemes = spec["components"]["securitySchemes"]
    assert schemes["bearerAuth"] == {**schemes["bearerAuth"], "type": "http", "scheme": "bearer"}
    assert schemes["workspaceId"] == {
        **schemes["workspaceId"],
        "type": "apiKey",
        "in": "header",
        "name": "X-Workspace-ID",
    }
    for method, path, operation in _operations(spec):
        names = {p["name"].lower() for p in operation.get("parameters", [])}
        assert not names & {"authorization", "x-workspace-id"}, (method, path)
        expected = ["bearerAuth", "workspaceId"] if path.startswith(WS) else ["bearerAuth"]
        assert [sorted(r) for r in operation["security"]] == [expected], (method, path)


def test_a_validation_error_is_the_documented_400(
    client: TestClient, tenant: Tenant, spec: dict
) -> None:
    response = client.post(tenant.url("/api-keys"), json={"name": 5}, headers=tenant.headers)
    assert response.status_code == 400
    assert response.json() == {"error": "name: Input should be a valid string"}
    assert "400" in spec["paths"][f"{WS}/api-keys"]["post"]["responses"]
