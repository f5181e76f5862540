"""The Dagster code location (workspace.yaml points here). Thin: the work is in defs/."""

import dagster as dg

from composable_dagster.defs.dbt import dbt_definitions
from composable_dagster.settings import get_settings


@dg.definitions
def defs() -> dg.Definitions:
    return dbt_definitions(get_settings())
