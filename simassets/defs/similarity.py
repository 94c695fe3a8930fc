"""Similarity of each benchmark to each corpus sample: one asset per measure family of the registry.

Every family is declared in its own module under ``simassets/core/measures`` (see "Adding a measure" in the
README); nothing here names one.
"""

import dagster as dg

from simassets.core.measures import registry
from simassets.defs.factory import build

defs = dg.Definitions(assets=build(*registry.FAMILIES.values()))
