"""Small helpers shared by the asset modules: freshness checks, skip results, metadata."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import dagster as dg
import pandas as pd

from simassets import __version__
from simassets.core.hashing import fingerprint
from simassets.core.warehouse import Warehouse


@dataclass(frozen=True)
class Freshness:
    """What a partition writes (tables, keys) and the fingerprint of everything its rows depend on."""

    tables: tuple[str, ...]
    keys: dict[str, str]
    fingerprint: str

    def fresh(self, wh: Warehouse, profile: str) -> bool:
        return is_fresh(wh, self.tables, profile, self.keys, self.fingerprint)


def partition_fingerprint(asset: str, code_version: str, **inputs: Any) -> str:
    """What a partition's rows depend on: the asset, its code version, parameters and upstream fingerprints."""
    return fingerprint({"asset": asset, "code_version": code_version, "simassets": __version__, **inputs})


def upstream_fingerprint(wh: Warehouse, table: str, profile: str, keys: Mapping[str, str]) -> str:
    """The stored fingerprint of an upstream partition; a clear error if it was never materialized."""
    fp = wh.fingerprint(table, profile, keys)
    if fp is None:
        raise dg.Failure(
            description=f"upstream {table} {dict(keys)} (profile {profile}) is not materialized yet",
            allow_retries=False,
        )
    return fp


def is_fresh(wh: Warehouse, tables: Sequence[str], profile: str, keys: Mapping[str, str], fp: str) -> bool:
    return all(wh.fingerprint(t, profile, keys) == fp for t in tables)


def skipped(context: dg.AssetExecutionContext, wh: Warehouse, table: str, profile: str,
            keys: Mapping[str, str], fp: str, **metadata: Any) -> dg.MaterializeResult:
    """Result for a partition whose inputs are unchanged: nothing recomputed, the log says so."""
    stored = wh.stored(table, profile, keys)
    context.log.info(f"skipped {context.asset_key.to_user_string()} {dict(keys)}: unchanged (fingerprint {fp[:12]})")
    return dg.MaterializeResult(
        metadata={"skipped": True, "reason": "inputs unchanged", "fingerprint": fp[:16],
                  "rows": stored.rows if stored else 0, **metadata},
        data_version=dg.DataVersion(fp),
    )


def table_md(df: pd.DataFrame, max_rows: int = 20, floatfmt: str = ".3f") -> dg.MetadataValue:
    """A small markdown table for the UI."""
    if df.empty:
        return dg.MetadataValue.md("_(no rows)_")
    return dg.MetadataValue.md(df.head(max_rows).to_markdown(index=False, floatfmt=floatfmt))


def no_retry_on_bad_input(fn: Callable) -> Callable:
    """Turn bad-input errors (catalog, registry, source, task) into a ``dg.Failure`` that is not retried:
    a retry policy is for transient faults, and retrying a malformed file only delays the clear error."""
    from simassets.core.catalog import CatalogError
    from simassets.core.models import ModelRegistryError
    from simassets.core.sampling import SourceError
    from simassets.core.tasks import TaskBuildError

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (CatalogError, ModelRegistryError, SourceError, TaskBuildError) as exc:
            raise dg.Failure(description=f"{type(exc).__name__}: {exc}", allow_retries=False) from exc

    return wrapper
