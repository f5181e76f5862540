"""Secrets are write-only, encrypted at rest, and only ever sent where they were entered for."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from cryptography.fernet import Fernet
from fastapi.testclient import TestClient

from composable_dagster.catalog.db import alembic_config, catalog_session, upgrade_catalog
from composable_dagster.catalog.destinations import rotate_secrets
from composable_dagster.catalog.secret_box import SecretKeyError, load_secret_box
from composable_dagster.catalog.tables import Destination
from composable_dagster.settings import Settings

from ..api.conftest import Tenant, stored_config


def secret() -> str:
    return f"s3cret-{uuid.uuid4().hex}"


def webhook(client: TestClient, tenant: Tenant, config: dict):
    return client.post(
        tenant.url("/destinations"),
        json={"name": f"hook-{uuid.uuid4().hex[:6]}", "destination_type": "webhook",
              "config": config},
        headers=tenant.headers,
    )  # fmt: skip


def catalog_bytes(settings: Settings) -> bytes:
    """Every byte of the SQLite catalog on disk (the database and its WAL)."""
    path = Path(sa.make_url(settings.resolved_catalog_url).database)
    return b"".join(p.read_bytes() for p in path.parent.glob(f"{path.name}*"))


def test_secrets_are_masked_everywhere_and_encrypted_at_rest(
    client: TestClient, tenant: Tenant, settings: Settings
) -> None:
    header, signing, password, token = secret(), secret(), secret(), secret()
    created = webhook(client, tenant, {
        "url": f"http://hooks:{password}@127.0.0.1:9/in?token={token}&team=7",
        "headers": {"Authorization": f"Bearer {header}"}, "signing_secret": signing,
    })  # fmt: skip
    assert created.status_code == 201, created.text
    shown = created.json()["config"]
    assert shown["url"] == "http://hooks:********@127.0.0.1:9/in?token=********&team=7"
    assert shown["headers"] == {"Authorization": "********"}
    assert shown["signing_secret"] == "********"
    listed = client.get(tenant.url("/destinations"), headers=tenant.headers).text
    for value in (header, signing, password, token):
        assert value not in created.text and value not in listed
    # The run sees every secret ...
    full = stored_config(settings, created.json()["id"])
    assert full.url == f"http://hooks:{password}@127.0.0.1:9/in?token={token}&team=7"
    assert full.headers == {"Authorization": f"Bearer {header}"}
    assert full.signing_secret == signing
    # ... the catalog stores none of them in the clear.
    with catalog_session(settings.resolved_catalog_url) as session:
        row = session.get(Destination, created.json()["id"])
        assert row.config == shown
        assert row.secrets and all(v not in row.secrets for v in (header, signing, password))
    if settings.resolved_catalog_url.startswith("sqlite"):
        on_disk = catalog_bytes(settings)
        assert all(v.encode() not in on_disk for v in (header, signing, password, token))


def test_postgres_url_passwords_are_masked_in_userinfo_and_query(
    client: TestClient, tenant: Tenant
) -> None:
    password = secret()
    response = client.post(
        tenant.url("/destinations"),
        json={"name": "pg", "destination_type": "postgres", "config": {
            "url": f"postgresql://app@127.0.0.1:9/db?password={password}&sslmode=disable",
            "table": "members"}},
        headers=tenant.headers,
    )  # fmt: skip
    assert response.status_code == 201, response.text
    assert response.json()["config"]["url"] == (
        "postgresql://app@127.0.0.1:9/db?password=********&sslmode=disable"
    )
    assert password not in response.text


def test_a_put_that_moves_the_destination_must_re_enter_its_secrets(
    client: TestClient, tenant: Tenant, settings: Settings
) -> None:
    header = secret()
    created = webhook(client, tenant, {"url": "http://127.0.0.1:9/in",
                                       "headers": {"X-Api-Key": header}})  # fmt: skip
    url = tenant.url(f"/destinations/{created.json()['id']}")
    shown = created.json()["config"]

    # Same place, mask sent back: the stored secret is kept.
    kept = client.put(url, json={"config": {**shown, "timeout_seconds": 5}},
                      headers=tenant.headers)  # fmt: skip
    assert kept.status_code == 200, kept.text
    assert stored_config(settings, created.json()["id"]).headers == {"X-Api-Key": header}

    # Another host with the mask: refused, and nothing changed.
    moved = client.put(url, json={"config": {**shown, "url": "http://attacker.example/in"}},
                       headers=tenant.headers)  # fmt: skip
    assert moved.status_code == 400, moved.text
    assert moved.json()["error"].startswith("config.headers.X-Api-Key: re-enter the secret")
    assert stored_config(settings, created.json()["id"]).url == "http://127.0.0.1:9/in"

    # Another host with the secret typed again: fine.
    fresh = secret()
    entered = client.put(
        url,
        json={
            "config": {**shown, "url": "http://127.0.0.1:10/in", "headers": {"X-Api-Key": fresh}}
        },
        headers=tenant.headers,
    )
    assert entered.status_code == 200, entered.text
    assert stored_config(settings, created.json()["id"]).headers == {"X-Api-Key": fresh}


def test_a_postgres_host_change_with_the_masked_password_is_refused(
    client: TestClient, tenant: Tenant, settings: Settings
) -> None:
    password = secret()
    created = client.post(
        tenant.url("/destinations"),
        json={"name": "pg", "destination_type": "postgres",
              "config": {"url": f"postgresql://app:{password}@127.0.0.1:9/db", "table": "t"}},
        headers=tenant.headers,
    )  # fmt: skip
    url = tenant.url(f"/destinations/{created.json()['id']}")
    shown = created.json()["config"]
    elsewhere = shown["url"].replace("127.0.0.1:9", "db.attacker.example:5432")
    moved = client.put(url, json={"config": {**shown, "url": elsewhere}}, headers=tenant.headers)
    assert moved.status_code == 400, moved.text
    assert moved.json()["error"].startswith("config.url (password): re-enter the secret")
    # The target is the server, database, table and key: another table is another target.
    other_table = client.put(url, json={"config": {**shown, "table": "other"}},
                             headers=tenant.headers)  # fmt: skip
    assert other_table.status_code == 400, other_table.text
    # How it delivers is not where: kept with the masked password.
    same_target = client.put(url, json={"config": {**shown, "create_table": False}},
                             headers=tenant.headers)  # fmt: skip
    assert same_target.status_code == 200, same_target.text
    assert password in stored_config(settings, created.json()["id"]).url


def test_the_mask_is_no_secret_where_none_is_stored(client: TestClient, tenant: Tenant) -> None:
    response = webhook(client, tenant, {"url": "http://127.0.0.1:9/in",
                                        "signing_secret": "********"})  # fmt: skip
    assert response.status_code == 400
    assert response.json()["error"].startswith("config.signing_secret: '********' is the mask")


def test_catalog_and_key_files_are_owner_only(
    client: TestClient, tenant: Tenant, settings: Settings
) -> None:
    webhook(client, tenant, {"url": "http://127.0.0.1:9/in", "signing_secret": secret()})
    key_file = settings.secret_key_file
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    Fernet(key_file.read_text().strip())  # a real Fernet key
    if settings.resolved_catalog_url.startswith("sqlite"):
        catalog = Path(sa.make_url(settings.resolved_catalog_url).database)
        for path in catalog.parent.glob(f"{catalog.name}*"):  # the database, its -wal, -shm
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_rotation_re_encrypts_with_the_new_key(tmp_path: Path) -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    url = f"sqlite:///{tmp_path / 'catalog.sqlite'}"
    upgrade_catalog(url)
    sealed_by_old = load_secret_box(keys=old, key_file=tmp_path / "unused")
    with catalog_session(url) as session:
        from composable_dagster.catalog.workspaces import create_workspace

        workspace = create_workspace(session, name="Acme")
        session.add(Destination(workspace_id=workspace.id, name="d", destination_type="webhook",
                                config={}, secrets=sealed_by_old.seal({("x",): "value"}),
                                status="connected", status_error=""))  # fmt: skip
    with catalog_session(url) as session:
        assert (
            rotate_secrets(session, box=load_secret_box(keys=f"{new},{old}", key_file=tmp_path))
            == 1
        )
    only_new = load_secret_box(keys=new, key_file=tmp_path / "unused")
    with catalog_session(url) as session:
        row = session.scalars(sa.select(Destination)).one()
        assert only_new.open(row.secrets) == {("x",): "value"}
        with pytest.raises(SecretKeyError, match="cannot be decrypted"):
            sealed_by_old.open(row.secrets)


def test_rotate_command(tmp_path: Path) -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    env = {"PATH": "/usr/bin:/bin", "COMPOSABLE_HOME": str(tmp_path), "HOME": str(tmp_path)}

    def composable(*args: str, key: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "composable_dagster.cli", *args],
            env={**env, "COMPOSABLE_SECRET_KEY": key}, capture_output=True, text=True,
            timeout=120,
        )  # fmt: skip

    assert composable("init", key=old).returncode == 0
    url = f"sqlite:///{tmp_path / 'catalog.sqlite'}"
    with catalog_session(url) as session:
        from composable_dagster.catalog.workspaces import create_workspace

        workspace = create_workspace(session, name="Acme")
        session.add(Destination(workspace_id=workspace.id, name="d", destination_type="webhook",
                                config={}, status="connected", status_error="",
                                secrets=load_secret_box(keys=old, key_file=tmp_path)
                                .seal({("signing_secret",): "v"})))  # fmt: skip
    rotated = composable("secrets", "rotate", key=f"{new},{old}")
    assert rotated.returncode == 0, rotated.stderr
    assert json.loads(rotated.stdout) == {"destinations_reencrypted": 1}
    with catalog_session(url) as session:
        row = session.scalars(sa.select(Destination)).one()
        assert load_secret_box(keys=new, key_file=tmp_path).open(row.secrets) == {
            ("signing_secret",): "v"
        }
    wrong = composable("secrets", "rotate", key=Fernet.generate_key().decode())
    assert wrong.returncode == 1 and "cannot be decrypted" in wrong.stderr


def test_an_older_catalog_has_its_plaintext_secrets_encrypted_on_upgrade(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'catalog.sqlite'}"
    command.upgrade(alembic_config(url), "0001")  # the catalog as the previous release left it
    signing = secret()
    now = sa.func.current_timestamp()
    workspaces = sa.table(*("workspaces", *map(sa.column, ("id", "name", "slug"))),
                          sa.column("created_at"), sa.column("updated_at"))  # fmt: skip
    destinations = sa.table("destinations", *map(sa.column, (
        "id", "workspace_id", "name", "destination_type", "config", "status", "status_error",
        "created_at", "updated_at")))  # fmt: skip
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(
            workspaces.insert().values(id="w", name="W", slug="w", created_at=now, updated_at=now)
        )
        conn.execute(
            destinations.insert().values(
                id="d",
                workspace_id="w",
                name="hook",
                destination_type="webhook",
                config=json.dumps({"url": "http://127.0.0.1:9/in", "signing_secret": signing}),
                status="connected",
                status_error="",
                created_at=now,
                updated_at=now,
            )
        )
    engine.dispose()  # fmt: skip
    with pytest.raises(RuntimeError, match="plaintext destination secrets"):
        upgrade_catalog(url)  # without the key, nothing is touched ...
    box = load_secret_box(keys=None, key_file=tmp_path / "secret.key")
    upgrade_catalog(url, secret_box=box)  # ... with it, the upgrade completes
    with catalog_session(url) as session:
        row = session.get(Destination, "d")
        assert row.config["signing_secret"] == "********"
        assert box.open(row.secrets) == {("signing_secret",): signing}
    catalog_engine_dispose(url)
    assert signing.encode() not in (tmp_path / "catalog.sqlite").read_bytes()


def catalog_engine_dispose(url: str) -> None:
    from composable_dagster.catalog.db import catalog_engine

    catalog_engine(url).dispose()  # checkpoints the WAL into the database file


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        # SQLAlchemy reads a password up to the first "@", slashes included.
        ("postgresql://app:{s}/x@127.0.0.1:9/db", "postgresql://app:********@127.0.0.1:9/db"),
        # A parameter name is decoded before it is read: p%61ssword is password.
        ("postgresql://app@127.0.0.1:9/db?p%61ssword={s}",
         "postgresql://app@127.0.0.1:9/db?p%61ssword=********"),
    ],
)  # fmt: skip
def test_postgres_passwords_are_masked_as_sqlalchemy_reads_them(
    client: TestClient, tenant: Tenant, settings: Settings, url: str, shown: str
) -> None:
    value = secret()
    response = client.post(
        tenant.url("/destinations"),
        json={"name": "pg", "destination_type": "postgres",
              "config": {"url": url.format(s=value), "table": "t"}},
        headers=tenant.headers,
    )  # fmt: skip
    assert response.status_code == 201, response.text
    assert response.json()["config"]["url"] == shown and value not in response.text
    assert value in stored_config(settings, response.json()["id"]).url  # the run still has it
