"""The security tests attack the real API: they use the API tests' fixtures (app, catalogs on
SQLite and PostgreSQL, workspaces with keys)."""

from tests.api.conftest import *  # noqa: F403  (pytest collects the fixtures imported here)
