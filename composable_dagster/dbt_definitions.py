"""The dbt code location `composable_dbt` (workspace.yaml points here). Thin: see defs/dbt.py.

Apart from the catalog's location (composable_dagster/definitions.py) so that sync runs and
catalog reloads never load dagster-dbt or the dbt manifest's assets."""

import dagster as dg

from composable_dagster.defs.dbt import dbt_definitions
from composable_dagster.settings import get_settings


@dg.definitions
def defs() -> dg.Definitions:
    return dbt_definitions(get_settings())
