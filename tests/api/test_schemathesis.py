"""Property-based fuzzing of every operation in /openapi.json (schemathesis 4).

The app runs in-process (ASGI) over a copy of the session's demo directory (`demo_env`), so
the shared demo workspace is never written to (copying takes milliseconds, a second `init
--demo` 12 s). The copy gets an audience, a sync and a split, so that every id in a path can
be a real one, and a spare row of each kind for the DELETE operations. Dagster is not
running: the operations that call it must answer their documented 503, never a 500 or hang.

Each generated request must get no 5xx (except a documented 503), a documented status, the
documented content type and a body matching the documented schema. About a minute on a
loaded 2-core machine; `SEED` and `derandomize` make the run the same every time.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass

import hypothesis
import pytest
import schemathesis
import schemathesis.checks
from fastapi import FastAPI
from fastapi.testclient import TestClient

from composable_dagster.api.app import create_app
from composable_dagster.settings import Settings

from ..conftest import DemoEnv, free_port

# Per operation: the coverage phase's cases (boundary values, wrong types, missing fields,
# unexpected methods) and this many of the fuzzing phase.
MAX_EXAMPLES = 20
SEED = 1313

# Body fields (schemathesis binding paths) drawn mostly from real values of the workspace.
BODY_VALUES = {
    "parent_model_id": "model_id",
    "from_model_id": "model_id",
    "to_model_id": "model_id",
    "through_model_id": "model_id",
    "audience_id": "aud_id",
    "destination_id": "destination_id",
    "split_group_id": "group_id",
    "config.relationship_id": "relationship_id",
    "config.column": "column",
    "source_schema": "schema",
    "source_table": "table",
    "primary_key_column": "column",
    "timestamp_column": "column",
    "from_column": "column",
    "to_column": "column",
    "field_mapping[*].source_column": "column",
}
DEMO_COLUMNS = [
    "customer_id", "email", "country", "lifetime_value", "signup_at", "is_subscribed", "age",
    "order_id", "amount", "ordered_at", "event_id", "event_type", "occurred_at",
]  # fmt: skip
NOT_SERVER_ERROR = ["1xx", "2xx", "3xx", "4xx", 503]
CHECKS = [
    schemathesis.checks.not_a_server_error,
    schemathesis.checks.status_code_conformance,
    schemathesis.checks.content_type_conformance,
    schemathesis.checks.response_schema_conformance,
]


@dataclass(frozen=True)
class FuzzTarget:
    app: FastAPI
    workspace_id: str
    api_key: str
    ids: dict[str, list[str]]  # path parameter name -> real ids of the workspace
    # DELETE operation label -> (its last path parameter, an id only that operation gets)
    victims: dict[str, tuple[str, str]]


@pytest.fixture(scope="module")
def fuzz_target(demo_env: DemoEnv, tmp_path_factory: pytest.TempPathFactory) -> FuzzTarget:
    home = tmp_path_factory.mktemp("fuzz") / ".composable"
    shutil.copytree(demo_env.cwd / ".composable", home, ignore=shutil.ignore_patterns("dagster"))
    settings = Settings(
        home=home,
        dagster_url=f"http://127.0.0.1:{free_port()}/graphql",  # nobody listens
        warehouse_hold_seconds=0,
    )
    app = create_app(settings)
    out = demo_env.init_output
    with TestClient(app) as client:
        seeded = _Seeder(client, workspace_id=out["workspace_id"], api_key=out["api_key"])
        ids, victims = seeded.seed(out)
    return FuzzTarget(
        app=app,
        workspace_id=out["workspace_id"],
        api_key=out["api_key"],
        ids=ids,
        victims=victims,
    )


class _Seeder:
    """Creates, over HTTP, what the demo lacks: an audience, a sync, a split, and a spare
    row of each kind for the DELETE operations (so they do not delete what others use)."""

    def __init__(self, client: TestClient, *, workspace_id: str, api_key: str) -> None:
        self.client = client
        self.headers = {"Authorization": f"Bearer {api_key}", "X-Workspace-ID": workspace_id}
        self.base = f"/api/v1/workspaces/{workspace_id}"

    def post(self, path: str, body: dict) -> str:
        response = self.client.post(f"{self.base}{path}", json=body, headers=self.headers)
        assert response.status_code == 201, response.text
        return response.json()["id"]

    def seed(self, demo: dict) -> tuple[dict[str, list[str]], dict[str, tuple[str, str]]]:
        models, relationships = demo["model_ids"], demo["relationship_ids"]
        # The demo's file destination names the original directory's export root: point it
        # into this copy's, as a path relative to the workspace's export directory.
        destination = self.client.put(
            f"{self.base}/destinations/{demo['destination_id']}",
            json={"config": {"path": "demo-export", "format": "csv"}},
            headers=self.headers,
        )
        assert destination.status_code == 200, destination.text

        def audience(name: str) -> str:
            return self.post("/audiences", {
                "name": name, "parent_model_id": models["customers"],
                "filter_tree": {"type": "and", "children": [
                    {"type": "condition", "condition_type": "property",
                     "column": "lifetime_value", "operator": "greater_than", "value": 100}]},
            })  # fmt: skip

        def sync(name: str, audience_id: str) -> str:
            return self.post("/audience-syncs", {
                "name": name, "audience_id": audience_id,
                "destination_id": demo["destination_id"], "sync_mode": "mirror",
                "field_mapping": [{"source_column": "email", "destination_field": "email"}],
            })  # fmt: skip

        def split(name: str, audience_id: str) -> dict:
            response = self.client.post(
                f"{self.base}/audiences/{audience_id}/splits",
                json={"name": name, "groups": [
                    {"name": "a", "percentage": 90}, {"name": "b", "percentage": 10}]},
                headers=self.headers,
            )  # fmt: skip
            assert response.status_code == 201, response.text
            return response.json()

        main = audience("Fuzz: high value")
        main_split = split("Fuzz: holdout", main)
        ids = {
            "model_id": list(models.values()),
            "relationship_id": list(relationships.values()),
            "trait_id": list(demo["trait_ids"].values()),
            "destination_id": [demo["destination_id"]],
            "aud_id": [main],
            "sync_id": [sync("Fuzz: export", main)],
            "split_id": [main_split["id"]],
            "group_id": [group["id"] for group in main_split["groups"]],
            "key_id": [self.post("/api-keys", {"name": "fuzz"})],
            # A run id Dagster could know (a UUID), and one it cannot.
            "run_id": ["6f2d8d3c-1c4e-4a7e-9a43-0d9a3c1b2e55", "not-a-run"],
        }
        spare_relationship = self.post("/relationships", {
            "name": "Fuzz: spare", "from_model_id": models["customers"],
            "to_model_id": models["orders"], "from_column": "customer_id",
            "to_column": "customer_id",
        })  # fmt: skip
        spares = {
            "/api-keys/{key_id}": self.post("/api-keys", {"name": "fuzz spare"}),
            "/models/{model_id}": self.post("/models", {
                "name": "Fuzz: spare", "source_schema": "analytics", "source_table": "orders",
                "entity_type": "related", "primary_key_column": "order_id",
            }),
            "/relationships/{relationship_id}": spare_relationship,
            "/traits/{trait_id}": self.post("/traits", {
                "name": "Fuzz: spare", "parent_model_id": models["customers"],
                "trait_type": "aggregation",
                "config": {"relationship_id": relationships["customer_orders"],
                           "function": "count"},
            }),
            "/destinations/{destination_id}": self.post("/destinations", {
                "name": "Fuzz: spare", "destination_type": "file",
                "config": {"path": "spare-export", "format": "csv"},
            }),
            "/audiences/{aud_id}": audience("Fuzz: spare"),
            "/audiences/{aud_id}/splits/{split_id}": split("Fuzz: spare", main)["id"],
            "/audience-syncs/{sync_id}": sync("Fuzz: spare", main),
        }  # fmt: skip
        victims = {
            f"DELETE /api/v1/workspaces/{{id}}{path}": (path.rsplit("{", 1)[1][:-1], spare)
            for path, spare in spares.items()
        }
        return ids, victims


@pytest.fixture(scope="module")
def api_schema(fuzz_target: FuzzTarget) -> Iterator[schemathesis.BaseSchema]:
    config = schemathesis.Config.from_dict(
        {
            "seed": SEED,
            "suppress-health-check": ["too_slow", "filter_too_much", "data_too_large"],
            "generation": {"max-examples": MAX_EXAMPLES},
            "auth": {
                "openapi": {
                    "bearerAuth": {"bearer": fuzz_target.api_key},
                    "workspaceId": {"api_key": fuzz_target.workspace_id},
                }
            },
            # The workspace is always the demo's (other workspaces are test_auth's business);
            # resource ids are mostly real ones, so requests get past the 404, and bodies
            # often name real rows and columns, so they get past the first 400.
            "parameters": {
                "path.id": fuzz_target.workspace_id,
                **{
                    f"path.{name}": {"dictionary": name, "probability": 0.9}
                    for name in fuzz_target.ids
                },
                **{
                    f"body.{field}": {"dictionary": name, "probability": 0.7}
                    for field, name in BODY_VALUES.items()
                },
            },
            "dictionaries": {
                **{name: {"values": values} for name, values in fuzz_target.ids.items()},
                "table": {"values": ["customers", "orders", "events"]},
                "schema": {"values": ["analytics"]},
                "column": {"values": DEMO_COLUMNS},
            },
            "operations": [
                # Each DELETE deletes its own spare row, and the others keep theirs.
                *(
                    {"include-name": label, "parameters": {f"path.{name}": spare}}
                    for label, (name, spare) in fuzz_target.victims.items()
                ),
                # Dagster is down: where the document says 503, a 503 is the right answer.
                {
                    "include-name": _documenting(fuzz_target.app, "503"),
                    "checks": {"not_a_server_error": {"expected-statuses": NOT_SERVER_ERROR}},
                },
            ],
        }
    )
    started = time.monotonic()
    yield schemathesis.openapi.from_asgi("/openapi.json", fuzz_target.app, config=config)
    print(f"\nschemathesis: {time.monotonic() - started:.1f} s")


def _documenting(app: FastAPI, status: str) -> list[str]:
    """Labels (`METHOD /path`) of the operations whose documented responses include `status`."""
    spec = TestClient(app).get("/openapi.json").json()
    return [
        f"{method.upper()} {path}"
        for path, operations in spec["paths"].items()
        for method, operation in operations.items()
        if status in operation["responses"]
    ]


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@hypothesis.settings(deadline=None, derandomize=True, database=None)
def test_every_operation_conforms(case: schemathesis.Case) -> None:
    case.call_and_validate(checks=CHECKS)
