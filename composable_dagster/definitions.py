"""The Dagster code location (workspace.yaml points here). Thin: the work is in defs/."""

import dagster as dg

from composable_dagster.defs.load import build_definitions
from composable_dagster.settings import get_settings


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions(get_settings())
