"""Files stay in their root: a workspace's destinations write only under its export directory.

Each test tries the attack through the real API (SQLite and PostgreSQL catalogs) and checks
that nothing was written, then that the legitimate request next to it still works.
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from composable_dagster.destinations import postgres, webhook
from composable_dagster.destinations.postgres import PostgresDestination
from composable_dagster.destinations.webhook import WebhookDestination
from composable_dagster.settings import Settings
from tests.scopes import ANYWHERE

from ..api.conftest import Tenant, make_tenant


def create(client: TestClient, tenant: Tenant, destination_type: str, config: dict):
    return client.post(
        tenant.url("/destinations"),
        json={"name": f"d-{uuid.uuid4().hex[:8]}", "destination_type": destination_type,
              "config": config},
        headers=tenant.headers,
    )  # fmt: skip


def check_unsaved(client: TestClient, tenant: Tenant, destination_type: str, config: dict):
    return client.post(
        tenant.url("/destinations/test"),
        json={"destination_type": destination_type, "config": config},
        headers=tenant.headers,
    )


def export_dir(settings: Settings, slug: str) -> Path:
    return settings.resolved_export_root / slug


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory outside every export root that an attacker would like to write into."""
    return tmp_path / "outside" / uuid.uuid4().hex


@pytest.mark.parametrize(
    "path_of",
    [
        lambda outside: str(outside),  # absolute, outside the root
        lambda outside: "../../../../../../../../" + str(outside).lstrip("/"),  # climbing out
        lambda outside: f"file://{outside}",  # a file:// URL is a local path, confined too
        lambda outside: "/etc/composable-" + uuid.uuid4().hex,  # the host's /etc
    ],
    ids=["absolute", "dot-dot", "file-url", "etc"],
)
def test_file_paths_outside_the_export_directory_are_refused_and_nothing_is_created(
    client: TestClient, tenant: Tenant, outside: Path, path_of
) -> None:
    path = path_of(outside)
    for response in (
        create(client, tenant, "file", {"path": path}),
        check_unsaved(client, tenant, "file", {"path": path}),
    ):
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error.startswith("config.path: ") and "export directory" in error, error
    assert not outside.exists()
    assert not Path(path.removeprefix("file://")).exists()
    assert client.get(tenant.url("/destinations"), headers=tenant.headers).json() == []


def test_relative_and_inside_paths_work_and_write_only_inside(
    client: TestClient, tenant: Tenant, settings: Settings
) -> None:
    own = export_dir(settings, "acme")
    relative = create(client, tenant, "file", {"path": "crm/daily"})
    assert relative.status_code == 201, relative.text
    assert relative.json()["config"]["path"] == str(own / "crm" / "daily")
    assert relative.json()["status"] == "connected"
    absolute = create(client, tenant, "file", {"path": str(own / "weekly")})
    assert absolute.status_code == 201 and absolute.json()["status"] == "connected"
    url = f"file://{own}/monthly"
    as_url = create(client, tenant, "file", {"path": url})
    assert as_url.status_code == 201 and as_url.json()["config"]["path"] == str(own / "monthly")
    assert check_unsaved(client, tenant, "file", {"path": "probe"}).json()["success"] is True
    # Everything written is in the workspace's directory; the probe files are gone.
    written = {p.relative_to(own).as_posix() for p in own.rglob("*")}
    assert written == {"crm", "crm/daily", "weekly", "monthly", "probe"}


def test_another_workspaces_export_directory_is_refused(
    client: TestClient, tenant: Tenant, settings: Settings
) -> None:
    victim = make_tenant(settings, "Globex")
    theirs = export_dir(settings, "globex")
    assert create(client, victim, "file", {"path": "reports"}).status_code == 201
    for path in (str(theirs / "reports"), "../globex/reports", str(theirs)):
        response = create(client, tenant, "file", {"path": path})
        assert response.status_code == 400, response.text
        assert "another workspace's export directory" in response.json()["error"]
    # The export root itself (above every workspace) is no place to write either.
    assert create(client, tenant, "file", {"path": ".."}).status_code == 400
    assert {p.name for p in theirs.iterdir()} == {"reports"}


def test_a_symlink_out_of_the_export_directory_is_followed_and_refused(
    client: TestClient, tenant: Tenant, settings: Settings, outside: Path
) -> None:
    own = export_dir(settings, "acme")
    own.mkdir(parents=True)
    outside.mkdir(parents=True)
    (own / "link").symlink_to(outside)
    response = create(client, tenant, "file", {"path": "link/sub"})
    assert response.status_code == 400, response.text
    assert list(outside.iterdir()) == []


def test_fsspec_protocols_are_an_operator_allow_list(
    client: TestClient, tenant: Tenant, settings: Settings
) -> None:
    refused = create(client, tenant, "file", {"path": "memory://bucket/out"})
    assert refused.status_code == 400
    assert "COMPOSABLE_FILE_PROTOCOLS" in refused.json()["error"]
    # With the operator's say-so, the same URL is accepted.
    allowing = settings.model_copy(update={"file_protocols": "memory"})
    from composable_dagster.api.app import create_app

    with TestClient(create_app(allowing), raise_server_exceptions=False) as other:
        accepted = create(other, tenant, "file", {"path": f"memory://b-{uuid.uuid4().hex}/out"})
        assert accepted.status_code == 201, accepted.text


def test_file_databases_are_confined_like_files(
    client: TestClient, tenant: Tenant, settings: Settings, outside: Path
) -> None:
    for url in (f"sqlite:///{outside}.db", f"duckdb:///{outside}.duckdb", "sqlite:////etc/x.db"):
        for response in (
            create(client, tenant, "postgres", {"url": url, "table": "members"}),
            check_unsaved(client, tenant, "postgres", {"url": url, "table": "members"}),
        ):
            assert response.status_code == 400, response.text
            assert response.json()["error"].startswith("config.url: "), response.text
    assert not outside.parent.exists()
    inside = create(client, tenant, "postgres", {"url": "sqlite:///db/members.sqlite",
                                                 "table": "members"})  # fmt: skip
    assert inside.status_code == 201, inside.text
    assert inside.json()["config"]["url"] == (
        f"sqlite:///{export_dir(settings, 'acme') / 'db' / 'members.sqlite'}"
    )


def test_unknown_database_schemes_are_400_on_create_and_on_test(
    client: TestClient, tenant: Tenant
) -> None:
    config = {"url": "nosuchdb://user:pw@127.0.0.1/db", "table": "members"}
    for response in (
        create(client, tenant, "postgres", config),
        check_unsaved(client, tenant, "postgres", config),
    ):
        assert response.status_code == 400, response.text
        assert response.json()["error"].startswith("config.url: unknown database scheme")


# -- connection tests give up ----------------------------------------------------------------


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP port whose server accepts connections and then never says a word."""
    server = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


def test_connection_tests_give_up_at_their_deadline(
    silent_server: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The deadline is 10 s; a shorter one keeps this test quick, the mechanism is the same.
    monkeypatch.setattr(webhook, "CHECK_TIMEOUT_SECONDS", 1.0)
    monkeypatch.setattr(postgres, "CHECK_TIMEOUT_SECONDS", 2)
    hook = WebhookDestination()
    pg = PostgresDestination()
    checks = [
        lambda: hook.check_connection(
            hook.parse_config({"url": f"https://127.0.0.1:{silent_server}/x"}, scope=ANYWHERE)
        ),
        lambda: pg.check_connection(pg.parse_config(
            {"url": f"postgresql://u:p@127.0.0.1:{silent_server}/db", "table": "t"},
            scope=ANYWHERE,
        )),
    ]  # fmt: skip
    for check in checks:
        started = time.monotonic()
        outcome = check()
        assert not outcome.ok
        assert time.monotonic() - started < 6, outcome.message


@pytest.mark.parametrize(
    "url",
    [
        # duckdb-engine turns query keys into unescaped SET statements: arbitrary SQL.
        "duckdb:///:memory:?threads%3D1%3BSELECT%20error((SELECT%20content%20FROM%20"
        "read_text('/etc/hostname')))%3BSET%20threads=1",
        "duckdb:///db/x.duckdb?threads=1",
        "sqlite:///db/x.sqlite?timeout=abc",  # driver options, a 500 before
    ],
)
def test_file_database_urls_take_no_query_string(
    client: TestClient, tenant: Tenant, url: str
) -> None:
    for response in (
        create(client, tenant, "postgres", {"url": url, "table": "t"}),
        check_unsaved(client, tenant, "postgres", {"url": url, "table": "t"}),
    ):
        assert response.status_code == 400, response.text
        assert "takes no query parameters" in response.json()["error"]


@pytest.mark.parametrize(
    ("url", "error"),
    [
        # libpq parameters that move the connection (and a stored password) elsewhere
        ("postgresql://u:p@127.0.0.1:5432/db?hostaddr=10.0.0.1", "'hostaddr' is not allowed"),
        ("postgresql://u:p@127.0.0.1:5432/db?port=6543", "'port' is not allowed"),
        ("postgresql://u:p@127.0.0.1/db?host=evil.example", "'host' is not allowed"),
        ("postgresql://u:p@127.0.0.1/db?service=prod", "'service' is not allowed"),
        # files of this server
        ("postgresql://u:p@127.0.0.1/db?passfile=/root/.pgpass", "'passfile' is not allowed"),
        ("postgresql://u:p@127.0.0.1/db?sslkey=/etc/ssl/private/k", "'sslkey' is not allowed"),
        # a local socket (peer authentication as the server's user), a host list
        ("postgresql://u@%2Fvar%2Frun%2Fpostgresql/db", "one network host"),
        ("postgresql://u@/db", "needs a host"),
        ("postgresql://u:p@a.example,b.example/db", "one network host"),
        ("postgresql://u:p@h:5432,5433/db", "not a SQLAlchemy database URL"),
        # other engines and missing drivers: 400, not 500
        ("mysql://u:p@127.0.0.1/db", "unknown database scheme"),
        ("postgresql+pg8000://u:p@127.0.0.1/db", "is not installed"),
    ],
)
def test_postgres_urls_connect_to_their_host_only(
    client: TestClient, tenant: Tenant, url: str, error: str
) -> None:
    response = create(client, tenant, "postgres", {"url": url, "table": "t"})
    assert response.status_code == 400, response.text
    assert response.json()["error"].startswith("config.url: ") and error in response.text
    how = "postgresql://u:p@127.0.0.1:9/db?sslmode=disable&connect_timeout=2"
    assert create(client, tenant, "postgres", {"url": how, "table": "t"}).status_code == 201


@pytest.mark.parametrize(
    ("config", "error"),
    [
        ({"url": "https://example.invalid:99999/x"}, "config.url: not a valid port"),
        ({"url": "https://example.invalid:abc/x"}, "config.url: not a valid port"),
        ({"url": "https://h.example/x", "headers": {"X-A\r\nInjected": "1"}}, "header name"),
        ({"url": "https://h.example/x", "headers": {"X-A": "1\r\nInjected: 2"}}, "ASCII"),
        ({"url": "https://h.example/x", "headers": {"X-A": "caf\u00e9"}}, "ASCII"),
    ],
)
def test_webhook_urls_and_headers_are_checked_when_saved(
    client: TestClient, tenant: Tenant, config: dict, error: str
) -> None:
    response = create(client, tenant, "webhook", config)
    assert response.status_code == 400, response.text
    assert error in response.json()["error"]
