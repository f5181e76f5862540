"""The DuckDB sandbox of every connection that runs workspace SQL.

Both connect hooks use it: the API's read-only warehouse (warehouse/connection.py) and the
activation store that run workers query (warehouse/activation.py). Once set up, the
database instance reads and writes only the files it opened or attached (and its spill
directory): DuckDB adds exactly those to its allowed paths when external access goes off,
so `read_text`, `glob`, `COPY ... TO`, `ATTACH`, `INSTALL` and `LOAD` fail, and the
configuration is locked so no `SET` can undo it. Checked on DuckDB 2.0.1.

The database files themselves stay readable (`read_blob` of the attached file works inside
the sandbox): the parser rule of filters/user_sql.py is what refuses such table functions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# The one setting a later connection may still change (it is per connection).
QUIET = "SET enable_progress_bar = false"
# In this order: allowed_configs before the lock, the lock last.
SANDBOX = (
    "SET allowed_configs = ['enable_progress_bar']",
    "SET enable_external_access = false",  # files, URLs, ATTACH, COPY, INSTALL, LOAD
    "SET autoload_known_extensions = false",
    "SET autoinstall_known_extensions = false",  # downloading one is a network request
    "SET python_enable_replacements = false",  # no Python variable read as a table
    "SET lock_configuration = true",
)


def enter_sandbox(
    dbapi_connection: Any, *, before_lock: Callable[[Any], None] | None = None
) -> None:
    """Quiet a new DuckDB connection and put its database instance in the sandbox.

    Connections to one file in one process share a database instance, and a later one
    finds the configuration already locked: it only runs `before_lock` (its ATTACH IF NOT
    EXISTS / USE must then be no-ops) and skips the settings, which it could not change.

    Args:
        dbapi_connection: A raw `duckdb.DuckDBPyConnection`.
        before_lock: Opens what the instance needs (ATTACH) while external access is on.
    """
    # A library must not draw progress bars on the host process's terminal.
    dbapi_connection.execute(QUIET)
    locked = dbapi_connection.execute("SELECT current_setting('lock_configuration')").fetchone()
    if before_lock is not None:
        before_lock(dbapi_connection)
    if locked is not None and locked[0] is True:
        return
    for statement in SANDBOX:
        dbapi_connection.execute(statement)
