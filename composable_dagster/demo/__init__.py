"""The demo warehouse: deterministic synthetic customers, orders and events, built with dbt.

``build_demo_warehouse("duckdb:///demo.duckdb")`` generates the raw tables and runs the dbt
project in ``dbt_project/`` so that ``analytics.customers``, ``analytics.orders`` and
``analytics.events`` exist for audiences to filter on.
"""

from composable_dagster.dbt_project import (
    DBT_PROJECT_DIR,
    DbtCommandError,
    dbt_env_for_warehouse,
    dbt_parse,
)
from composable_dagster.demo.dbt_build import DemoBuildResult, build_demo_warehouse
from composable_dagster.demo.generate import (
    RawCounts,
    generate_raw_duckdb,
    generate_raw_postgres,
    raw_content_hash,
)

__all__ = [
    "DBT_PROJECT_DIR",
    "DbtCommandError",
    "DemoBuildResult",
    "RawCounts",
    "build_demo_warehouse",
    "dbt_env_for_warehouse",
    "dbt_parse",
    "generate_raw_duckdb",
    "generate_raw_postgres",
    "raw_content_hash",
]
