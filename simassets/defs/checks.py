"""Asset checks, evaluated inside the partitioned assets (one result per partition materialization)."""

from __future__ import annotations

import dagster as dg
import numpy as np
import pandas as pd


def non_empty_spec(asset: str) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec("partition_non_empty", asset=asset, description="every partition holds at least one row")


def non_empty_check(asset: str, rows: int) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        asset_key=asset, check_name="partition_non_empty", passed=rows > 0, metadata={"rows": rows},
        severity=dg.AssetCheckSeverity.ERROR,
    )


def finite_in_range_spec(asset: str) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec("values_finite_in_range", asset=asset,
                             description="similarity values are finite and inside each measure's range")


def finite_in_range_check(asset: str, values: pd.DataFrame, ranges: dict[str, tuple[float, float]]) -> dg.AssetCheckResult:
    """``values`` has columns measure, value; ``ranges`` maps measure -> (low, high) inclusive."""
    bad: dict[str, int] = {}
    for measure, group in values.groupby("measure"):
        low, high = ranges.get(str(measure), (-np.inf, np.inf))
        v = group["value"].to_numpy(dtype=float)
        n_bad = int((~np.isfinite(v) | (v < low - 1e-6) | (v > high + 1e-6)).sum())
        if n_bad:
            bad[str(measure)] = n_bad
    return dg.AssetCheckResult(
        asset_key=asset, check_name="values_finite_in_range", passed=not bad,
        metadata={"values": len(values), "bad_by_measure": dg.MetadataValue.json(bad)},
    )


def scores_in_unit_spec(asset: str) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec("scores_in_unit_interval", asset=asset, description="acc and acc_norm lie in [0, 1]")


def scores_in_unit_check(asset: str, scores: dict[str, float | None]) -> dg.AssetCheckResult:
    bad = {k: v for k, v in scores.items() if v is not None and not (0.0 <= v <= 1.0)}
    return dg.AssetCheckResult(asset_key=asset, check_name="scores_in_unit_interval", passed=not bad,
                               metadata={"scores": dg.MetadataValue.json(scores), "out_of_range": dg.MetadataValue.json(bad)})
