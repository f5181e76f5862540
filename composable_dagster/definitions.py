"""The catalog's Dagster code location `composable` (workspace.yaml points here): an asset
per audience and per sync. Thin: the work is in defs/. The dbt models are the other
location, composable_dagster/dbt_definitions.py."""

import dagster as dg

from composable_dagster.defs.load import build_definitions
from composable_dagster.settings import get_settings


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions(get_settings())
