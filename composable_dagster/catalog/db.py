"""Catalog engine, sessions and migrations (Alembic, run from the package)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from composable_dagster.private_files import ensure_private_file

if TYPE_CHECKING:
    from alembic.config import Config

    from composable_dagster.catalog.secret_box import SecretBox

_MIGRATIONS = Path(__file__).with_name("migrations")


def _enable_sqlite_foreign_keys(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    # WAL lets the API write while Dagster's code server reads the catalog.
    cursor.execute("PRAGMA journal_mode=WAL")
    # Overwrite deleted content, so a replaced value (a secret sealed by migration 0002, a
    # revoked key's hash) does not linger in free pages of the file.
    cursor.execute("PRAGMA secure_delete=ON")
    cursor.close()


@lru_cache(maxsize=8)
def catalog_engine(url: str) -> sa.Engine:
    """One engine per catalog URL per process (pooled connections)."""
    if url.startswith("sqlite"):
        path = sa.make_url(url).database
        if path and path != ":memory:":
            # Owner-only from its first byte: it holds API key hashes and (encrypted) secrets.
            # SQLite gives its -wal and -shm files the database file's mode.
            ensure_private_file(Path(path))
        engine = sa.create_engine(url, connect_args={"timeout": 30})
        sa.event.listen(engine, "connect", _enable_sqlite_foreign_keys)
        return engine
    return sa.create_engine(url, pool_pre_ping=True)


def alembic_config(url: str, *, secret_box: SecretBox | None = None) -> Config:
    # Imported here: a run worker reads the catalog but never migrates it (0.2 s of its start).
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    # Migration 0002 encrypts plaintext secrets of older catalogs with it.
    config.attributes["secret_box"] = secret_box
    return config


def upgrade_catalog(url: str, *, secret_box: SecretBox | None = None) -> None:
    """Bring the catalog at `url` to the newest schema (creates it when empty).

    `secret_box` is needed only to upgrade a catalog that still holds plaintext secrets.
    """
    from alembic import command

    command.upgrade(alembic_config(url, secret_box=secret_box), "head")


@contextmanager
def catalog_session(url: str) -> Iterator[Session]:
    """A session that commits on success and rolls back on any error: no partial writes."""
    session = sessionmaker(catalog_engine(url), expire_on_commit=False)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
