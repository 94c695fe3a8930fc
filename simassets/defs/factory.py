"""The asset factory: every :class:`~simassets.core.computation.Computation` becomes one asset per profile.

Each profile is its own Dagster world inside the one code location: its assets are keyed ``<profile>/<name>``
and grouped ``<profile>_<group>``, and its partitions are dynamic partitions of its own (``quick_corpus``,
``full_benchmark``, ...) that hold exactly the profile's corpora, benchmarks, models and studies. A run of
one profile's asset reads and writes that profile's rows only, and a partition key the profile does not
have is refused.

The factory does what every asset shares, so an asset module only declares what it reads and computes:
the fingerprint of the inputs, skip-when-fresh (the checks re-run on the stored rows), atomic writes,
``DataVersion``, checks (measure ranges from the registry) and standard metadata. A run may cover a range
of partitions (a UI backfill, a sensor request, ``simassets run``): the model loads once and the
bookkeeping is paid once; each partition still gets its own rows, fingerprint and metadata.
"""

import contextlib
import functools
import time
import warnings
from collections.abc import Iterable
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd

from simassets.core import budget, schema
from simassets.core.catalog import PROFILE_NAMES, CatalogError
from simassets.core.computation import (DIMENSIONS, MEASURE_RANGES, NON_EMPTY, SCORES_IN_UNIT, Call, Computation,
                                        FilePath, Markdown, NotMaterialized, OutOfProfile, Scope, partition_fingerprint)
from simassets.defs.resources import StudyResource

PROFILES = PROFILE_NAMES
PROFILE_TAG = "simassets/profile"
#: Partitions per run of a UI backfill: a model loads once per run and the bookkeeping is paid once, while a
#: backfill of a whole profile still spreads over the run queue's slots (quick: 39 benchmarks in two runs).
PARTITIONS_PER_RUN = 25

#: Every computation the code location builds, by name (the runner and the sensors plan from these).
COMPUTATIONS: dict[str, Computation] = {}

# ``eager()`` without its "no upstream partition missing" guard: an upstream partition that is never
# materialized (a failed evaluation) must not block a study forever; the study correlates over the
# partitions that exist and says so (n, notes).
REFRESH_AFTER_UPSTREAM = (dg.AutomationCondition.eager()
                          .without(~dg.AutomationCondition.any_deps_missing())
                          .with_label("eager (missing upstream partitions allowed)"))


def asset_key(profile: str, name: str) -> dg.AssetKey:
    return dg.AssetKey([profile, name])


def profile_and_name(key: dg.AssetKey) -> tuple[str, str]:
    profile, name = key.path
    return profile, name


def partitions_name(profile: str, dimension: str) -> str:
    return f"{profile}_{dimension}"


@functools.cache
def _dynamic(profile: str, dimension: str) -> dg.DynamicPartitionsDefinition:
    return dg.DynamicPartitionsDefinition(name=partitions_name(profile, dimension))


@functools.cache
def partitions_def(profile: str, partitioning: str | None) -> dg.PartitionsDefinition | None:
    """The profile's partitions of a partitioning (None: unpartitioned)."""
    dims = DIMENSIONS[partitioning]
    if not dims:
        return None
    if len(dims) == 1:
        return _dynamic(profile, dims[0])
    return dg.MultiPartitionsDefinition({d: _dynamic(profile, d) for d in dims})


def keys_of(pdef: dg.PartitionsDefinition | None, partition_key: str | None) -> dict[str, str]:
    """Dimension name -> value of a partition key (in real runs and under test contexts alike)."""
    if pdef is None or partition_key is None:
        return {}
    if isinstance(pdef, dg.MultiPartitionsDefinition):
        return dict(pdef.get_partition_key_from_str(partition_key).keys_by_dimension)
    assert isinstance(pdef, dg.DynamicPartitionsDefinition) and pdef.name
    return {pdef.name.split("_", 1)[1]: partition_key}


def partition_key(pdef: dg.PartitionsDefinition | None, keys: dict[str, str]) -> str | None:
    if pdef is None:
        return None
    if isinstance(pdef, dg.MultiPartitionsDefinition):
        return str(dg.MultiPartitionKey(keys))
    return next(iter(keys.values()))


# --------------------------------------------------------------------------- checks
def _measure_ranges(frames: Iterable[pd.DataFrame]) -> dict[str, int]:
    """Values that are not finite or lie outside their measure's registered range, counted per measure."""
    from simassets.core.measures import registry

    bad: dict[str, int] = {}
    values = pd.concat([f[["measure", "value"]] for f in frames if len(f)], ignore_index=True) if frames else None
    if values is None or values.empty:
        return bad
    for measure, group in values.groupby("measure"):
        spec = registry.MEASURES.get(str(measure))
        low, high = spec.range if spec else (-np.inf, np.inf)
        v = group["value"].to_numpy(dtype=float)
        # example-level rows may be NaN where a measure is undefined for that example (no input tokens)
        n_bad = int((np.isinf(v) | (v < low - 1e-6) | (v > high + 1e-6)).sum())
        if n_bad:
            bad[str(measure)] = n_bad
    return bad


def _says_why(warning: Any) -> bool:
    return isinstance(warning, str) and warning != ""


def _check_outcome(check: str, tables: dict[str, pd.DataFrame], comp: Computation) -> dict[str, Any] | None:
    """None when the check passes, else what failed."""
    if check == NON_EMPTY:
        return None if len(tables[comp.writes[0]]) else {"rows": 0}
    if check == MEASURE_RANGES:
        frames = [tables[t] for t in schema.SIMILARITY_TABLES if t in tables]
        dataset = [f for t, f in tables.items() if t == schema.DATASET_SIMILARITY]
        bad = _measure_ranges(frames)
        # a dataset-level value is NaN only where its row's warning says why (a contamination gain with no
        # contaminated example); an unexplained NaN fails
        nan = sum(int((f["value"].isna() & ~f["warning"].map(_says_why)).sum()) for f in dataset)
        return {**bad, **({"nan_dataset_values": nan} if nan else {})} or None
    if check == SCORES_IN_UNIT:
        s = tables[schema.BENCHMARK_SCORES]
        bad = {c: float(v) for c in ("acc", "acc_norm") for v in s[c].dropna() if not 0.0 <= v <= 1.0}
        return bad or None
    raise ValueError(f"unknown check {check!r}")


CHECK_DESCRIPTIONS = {
    NON_EMPTY: "every partition holds at least one row",
    MEASURE_RANGES: "similarity values are finite and inside each measure's registered range (a dataset value is "
                    "undefined only with a warning that says why)",
    SCORES_IN_UNIT: "acc and acc_norm lie in [0, 1]",
}


# --------------------------------------------------------------------------- one partition
BAD_INPUT: tuple[type[BaseException], ...] = (CatalogError, OutOfProfile, NotMaterialized)


def bad_input_errors() -> tuple[type[BaseException], ...]:
    """Errors that name a malformed input: never retried (a retry only delays the clear error)."""
    from simassets.core.models import ModelRegistryError
    from simassets.core.sampling import SourceError
    from simassets.core.tasks import TaskBuildError

    return (*BAD_INPUT, ModelRegistryError, SourceError, TaskBuildError)


def _with_keys(df: pd.DataFrame, table: str, keys: dict[str, str]) -> pd.DataFrame:
    """The table's columns, with key columns the computation left out filled from the partition keys."""
    cols = schema.columns(table)
    fill = {k: v for k, v in keys.items() if k in cols and k not in df.columns}
    df = df.assign(**fill) if fill else df
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise ValueError(f"{table}: the computation's rows lack column(s) {missing}")
    return df[cols]


def run_partition(comp: Computation, scope: Scope, keys: dict[str, str],
                  log=print) -> tuple[dict[str, Any], str, dict[str, Any]]:
    """Compute (or skip, when fresh) one partition: (metadata, fingerprint, failed checks by name).

    Shared by the asset body and the tests; raises on bad input (``bad_input_errors()``) and on failures."""
    start = time.perf_counter()
    scope.check_in_profile(keys)
    inputs = comp.inputs(scope, keys)
    fp = partition_fingerprint(comp.name, comp.code_version, **inputs)
    wh, profile, at = scope.warehouse, comp.table_profile(scope), comp.storage_keys(keys)
    if comp.is_fresh(scope, keys, fp):
        log(f"skipped {comp.name} {keys}: unchanged (fingerprint {fp[:12]})")
        tables = {t: wh.read_partition(t, profile, at) for t in comp.writes} if comp.check_names else {}
        stored = wh.stored(comp.writes[0], profile, at)
        meta: dict[str, Any] = {"skipped": True, "reason": "inputs unchanged", "rows": stored.rows if stored else 0}
        info = stored.info if stored else {}
        extra = dict(info.get("metadata", {}))
    else:
        if comp.pool in ("model", "cpu_heavy"):  # torch: processes x threads within the cores
            threads = budget.apply_torch_threads()
            log(f"{comp.name} {keys}: {threads} torch thread(s) in this process")
        else:  # numpy/scipy/sklearn too: their BLAS and OpenMP pools start with one thread per core
            budget.apply_thread_budget()
        out = comp.compute(Call(scope, keys, inputs, log, fp))
        missing = [t for t in comp.writes if t not in out.tables]
        if missing:
            raise ValueError(f"computation {comp.name} returned no rows for {missing}")
        tables = {t: _with_keys(out.tables[t], t, keys) for t in comp.writes}
        info = {**(out.info or {}), "metadata": _storable(out.metadata)}
        for t in comp.writes:
            wh.write_partition(t, profile, at, tables[t], fp, info=info)
        meta = {"rows": len(tables[comp.writes[0]])}
        extra = out.metadata
    if len(comp.writes) > 1:
        meta.update({f"rows_{t}": len(tables[t]) if t in tables else None for t in comp.writes})
    failed = {c: o for c in comp.checks if (o := _check_outcome(c, tables, comp)) is not None} if tables else {}
    failed.update({c.name: o for c in comp.own_checks if tables and (o := c.outcome(scope, keys, tables)) is not None})
    meta.update({**extra, "seconds": round(time.perf_counter() - start, 2), "fingerprint": fp[:16]})
    return meta, fp, failed


def _storable(metadata: dict[str, Any]) -> dict[str, Any]:
    """Metadata kept with the rows, so that a skipped partition still shows it: plain values, Markdown and
    paths (tagged), JSON-able lists and dicts."""
    out: dict[str, Any] = {}
    for k, v in metadata.items():
        if isinstance(v, (Markdown, FilePath)):
            out[k] = {"__kind__": type(v).__name__, "value": str(v)}
        elif isinstance(v, (bool, int, float, str, list, dict)) or v is None:
            out[k] = v
    return out


def _metadata(meta: dict[str, Any]) -> dict[str, Any]:
    """Computation metadata as Dagster metadata values (Markdown rendered, paths clickable, JSON as JSON)."""
    out: dict[str, Any] = {}
    for k, v in meta.items():
        if isinstance(v, dict) and v.get("__kind__") in ("Markdown", "FilePath"):
            v = (Markdown if v["__kind__"] == "Markdown" else FilePath)(v["value"])
        if v is None:
            continue
        if isinstance(v, Markdown):
            out[k] = dg.MetadataValue.md(str(v))
        elif isinstance(v, FilePath):
            out[k] = dg.MetadataValue.path(str(v))
        elif isinstance(v, (list, dict)):
            out[k] = dg.MetadataValue.json(v)
        elif isinstance(v, float) and not np.isfinite(v):
            out[k] = dg.MetadataValue.text(str(v))
        else:
            out[k] = v
    return out


@contextlib.contextmanager
def dynamic_partitions_read_once(instance: dg.DagsterInstance):
    """Within the block, ``instance`` answers each dynamic-partitions question from storage once.

    Dagster's ``add_asset_metadata(partition_key=...)`` checks the key against the run's range by listing the range
    anew, which reads both dynamic dimensions from storage on every call: 6 queries, ~26 ms, so 11 s of a
    105-partition x 4-asset corpus x benchmark run. A run's step does not change its own partitions, so the block
    that records per-partition metadata asks each question once. A nested block leaves the outer one's cache."""
    names = [n for n in ("get_dynamic_partitions", "has_dynamic_partition") if n not in vars(instance)]
    vars(instance).update({name: functools.cache(getattr(instance, name)) for name in names})
    try:
        yield
    finally:
        for name in names:
            vars(instance).pop(name, None)


# --------------------------------------------------------------------------- the asset body
def materialize(context: dg.AssetExecutionContext, comp: Computation, scope: Scope) -> dg.MaterializeResult:
    """Every partition of the run (one, or a range): compute or skip each, record each one's metadata; on
    failures, record the partitions that succeeded and fail the step naming the others."""
    pdef = context.assets_def.partitions_def
    pkeys: list[str | None] = list(context.partition_keys) if pdef is not None else [None]
    bad = bad_input_errors()
    done: list[tuple[str | None, dict[str, Any], str]] = []
    failures: list[tuple[str | None, BaseException]] = []
    checks: dict[str, dict[str, Any]] = {}
    for pk in pkeys:
        try:
            meta, fp, failed = run_partition(comp, scope, keys_of(pdef, pk), context.log.info)
        except Exception as exc:  # one partition's failure does not lose the others' work
            if len(pkeys) == 1:
                if isinstance(exc, bad):
                    raise dg.Failure(description=f"{type(exc).__name__}: {exc}", allow_retries=False) from exc
                raise
            context.log.error(f"{comp.name} [{pk}] failed: {type(exc).__name__}: {exc}")
            failures.append((pk, exc))
            continue
        done.append((pk, meta, fp))
        for check, outcome in failed.items():
            checks.setdefault(check, {})[pk or "all"] = outcome
    check_results = [
        dg.AssetCheckResult(check_name=c, passed=c not in checks,
                            severity=dg.AssetCheckSeverity.ERROR if c == NON_EMPTY else dg.AssetCheckSeverity.WARN,
                            metadata={"partitions_checked": len(done),
                                      **({"failed_partitions": ", ".join(sorted(checks[c]))} if c in checks else {}),
                                      "failed": dg.MetadataValue.json(checks.get(c, {}))})
        for c in comp.check_names]
    if failures:
        for pk, meta, _ in done:
            context.log_event(dg.AssetMaterialization(asset_key=context.asset_key, partition=pk, metadata=_metadata(meta)))
        for result in check_results:
            context.log_event(result)
        lines = "; ".join(f"[{pk}] {type(e).__name__}: {e}" for pk, e in failures[:10])
        raise dg.Failure(description=f"{len(failures)} of {len(pkeys)} partition(s) failed: {lines}",
                         allow_retries=not all(isinstance(e, bad) for _, e in failures),
                         metadata={"failed_partitions": dg.MetadataValue.json([str(pk) for pk, _ in failures]),
                                   "materialized_partitions": len(done)})
    if len(done) == 1:
        (_, meta, fp), = done
        return dg.MaterializeResult(metadata=_metadata(meta), data_version=dg.DataVersion(fp), check_results=check_results)
    with dynamic_partitions_read_once(context.instance):
        for pk, meta, _ in done:
            context.add_asset_metadata(_metadata(meta), partition_key=pk)
    skipped = sum(1 for _, m, _ in done if m.get("skipped"))
    # no data version for a range: one version would stand for many partitions (each one's fingerprint is in
    # its metadata)
    return dg.MaterializeResult(
        metadata={"partitions_in_run": len(done), "computed_in_run": len(done) - skipped, "skipped_in_run": skipped},
        check_results=check_results)


# --------------------------------------------------------------------------- building
def build_asset(comp: Computation, profile: str) -> dg.AssetsDefinition:
    """One profile's asset of a computation."""
    key = asset_key(profile, comp.name)
    deps = [dg.AssetDep(asset_key(profile, u.asset),
                        partition_mapping=dg.AllPartitionMapping() if u.mapping == "all" else None)
            for u in comp.upstream]
    check_specs = [*(dg.AssetCheckSpec(c, asset=key, description=CHECK_DESCRIPTIONS[c]) for c in comp.checks),
                   *(dg.AssetCheckSpec(c.name, asset=key, description=c.description) for c in comp.own_checks)]

    def _asset(context: dg.AssetExecutionContext, study: StudyResource) -> dg.MaterializeResult:
        return materialize(context, comp, study.scope(profile))

    _asset.__doc__ = comp.description
    with warnings.catch_warnings():  # BackfillPolicy is beta in Dagster 1.13: the warning says nothing to a user
        warnings.filterwarnings("ignore", message=".*backfill_policy.*", category=dg.BetaWarning)
        return dg.asset(
            key=key,
            description=comp.description,
            partitions_def=partitions_def(profile, comp.partitioning),
            deps=deps,
            group_name=f"{profile}_{comp.group}",
            kinds=set(comp.kinds),
            code_version=comp.code_version,
            pool=comp.pool,
            retry_policy=dg.RetryPolicy(max_retries=comp.retries, delay=5) if comp.retries else None,
            automation_condition=REFRESH_AFTER_UPSTREAM if comp.refresh_after_upstream else None,
            backfill_policy=(dg.BackfillPolicy.multi_run(comp.partitions_per_run or PARTITIONS_PER_RUN)
                             if comp.partitioning else None),
            check_specs=check_specs or None,
            tags={PROFILE_TAG: profile},
        )(_asset)


def build(*computations: Computation) -> list[dg.AssetsDefinition]:
    """The assets of ``computations`` for every profile (and their registration for planning)."""
    out = []
    for comp in computations:
        known = COMPUTATIONS.get(comp.name)
        if known is not None and known.compute.__module__ != comp.compute.__module__:  # (a module re-imported: fine)
            raise ValueError(f"two computations are named {comp.name!r}: {known.compute.__module__}, "
                             f"{comp.compute.__module__}")
        COMPUTATIONS[comp.name] = comp
        out += [build_asset(comp, p) for p in PROFILES]
    return out


def computation_of(key: dg.AssetKey) -> tuple[str, Computation]:
    """(profile, computation) behind an asset key."""
    profile, name = profile_and_name(key)
    return profile, COMPUTATIONS[name]


def load_all() -> dict[str, Computation]:
    """Import every module of ``simassets.defs`` (each builds its computations' assets); the registry of all."""
    import importlib
    import pkgutil

    import simassets.defs as package

    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        importlib.import_module(f"{package.__name__}.{info.name}")
    return COMPUTATIONS
