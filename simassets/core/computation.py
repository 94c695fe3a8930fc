"""What a table asset is, without the orchestrator: its partitioning, what it reads, the inputs its rows
depend on, and a pure function that returns its tables.

A :class:`Computation` is declared once (in ``simassets/defs`` for the pipeline's own steps, in the measure's
own module under ``simassets/core/measures`` for a measure family). ``simassets.defs.factory`` turns it into
one Dagster asset per profile and does the bookkeeping every asset shares: the fingerprint of its inputs,
skip-when-fresh, atomic writes, data versions, checks and metadata. ``simassets run``, the sensors and the
schedules decide "stale" through :meth:`Computation.fingerprint` and :meth:`Computation.is_fresh` -- the
same functions the asset body calls.

A :class:`Scope` is everything a computation may read for one profile (catalog, registry, warehouse,
paths); it is built per run, so an edited catalog is seen by the next run.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from simassets import __version__
from simassets.core import schema
from simassets.core.catalog import Catalog, Profile, load_catalog
from simassets.core.hashing import fingerprint as _fingerprint
from simassets.core.warehouse import StoredPartition, Warehouse

Keys = Mapping[str, str]
Partitioning = Literal["corpus", "benchmark", "study", "corpus_x_benchmark", "model_x_benchmark", "model_x_corpus"]
#: The dimensions of each partitioning (the order is the one partition keys are printed in).
DIMENSIONS: dict[str | None, tuple[str, ...]] = {
    None: (), "corpus": ("corpus",), "benchmark": ("benchmark",), "study": ("study",),
    "corpus_x_benchmark": ("corpus", "benchmark"), "model_x_benchmark": ("model", "benchmark"),
    "model_x_corpus": ("model", "corpus"),
}


class NotMaterialized(RuntimeError):
    """An upstream partition a computation reads has not been stored yet (the step has to wait)."""


class OutOfProfile(ValueError):
    """A partition key that is not part of the profile's catalog or registry (refused: it would write rows the
    profile's studies do not describe)."""


def partition_fingerprint(asset: str, code_version: str, **inputs: Any) -> str:
    """What a partition's rows depend on: the asset, its code version, parameters and upstream fingerprints."""
    return _fingerprint({"asset": asset, "code_version": code_version, "simassets": __version__, **inputs})


@dataclass(frozen=True)
class Scope:
    """One profile's world: where it reads (catalog, registry, data root) and writes (warehouse home)."""

    profile: str
    home: Path
    data_root: Path
    catalog_dir: Path
    on_bad_row: str = "fail"
    memo: dict = field(default_factory=dict, init=False, compare=False, repr=False)  # what inputs() loaded, for compute()

    @cached_property
    def catalog(self) -> Catalog:
        return load_catalog(self.catalog_dir / "catalog.toml")

    @cached_property
    def spec(self) -> Profile:
        return self.catalog.profile(self.profile)

    @property
    def seed(self) -> int:
        return self.spec.seed

    @cached_property
    def models(self):
        from simassets.core.models import load_registry

        return load_registry(self.catalog_dir / "models.toml")

    @cached_property
    def warehouse(self) -> Warehouse:
        return Warehouse(self.home)

    @property
    def cache_dir(self) -> Path:
        return self.home / "cache"

    @property
    def registry_file(self) -> Path:
        return self.catalog_dir / "models.toml"

    def values(self, dimension: str) -> list[str]:
        """The profile's partition keys of one dimension, in catalog (or registry) order."""
        if dimension == "corpus":
            return [c.name for c in self.catalog.corpora_for(self.profile)]
        if dimension == "benchmark":
            return [b.name for b in self.catalog.benchmarks_for(self.profile)]
        if dimension == "model":
            from simassets.core.models import models_for_profile

            return [m.id for m in models_for_profile(self.models, self.profile)]
        if dimension == "study":
            from simassets.core.studies import load_studies

            return list(load_studies(self.catalog))
        raise ValueError(f"unknown partition dimension {dimension!r}")

    def check_in_profile(self, keys: Keys) -> None:
        """Refuse a partition whose corpus, benchmark, model or study the profile does not have."""
        for dim, value in keys.items():
            if value not in self.values(dim):
                where = self.registry_file if dim == "model" else self.catalog.source_file
                others = [p for p in self.catalog.profiles if p != self.profile
                          and value in dataclasses.replace(self, profile=p).values(dim)]
                hint = f"; it belongs to profile {', '.join(others)}" if others else ""
                raise OutOfProfile(f"{dim} {value!r} is not in profile {self.profile!r} ({where}){hint}: "
                                   f"refused, so that no row of another profile is written into {self.profile!r}")

    def upstream(self, table: str, keys: Keys, profile_free: bool = False) -> str:
        """The stored fingerprint of an upstream partition; :class:`NotMaterialized` if there is none (or, while a
        planner collects what is missing in ``memo["missing"]``, a placeholder, the table noted there)."""
        fp = self.warehouse.fingerprint(table, None if profile_free else self.profile, keys)
        if fp is None:
            missing = self.memo.get("missing")
            if missing is not None:
                missing.add(table)
                return f"<missing {table}>"
            raise NotMaterialized(f"upstream {table} {dict(keys)} (profile {self.profile}) is not materialized yet")
        return fp

    def read(self, table: str, keys: Keys) -> pd.DataFrame:
        return self.warehouse.read_partition(table, self.profile, keys)


def benchmark_chars(scope: Scope, benchmark: str) -> float:
    """Characters of a benchmark's stored examples (input once, each choice or else the target): what a model or a
    corpus index reads for it, the basis of the relative costs that balance parallel runs. 1.0 while not stored."""
    key = ("benchmark_chars", benchmark)
    if key not in scope.memo:
        try:
            ex = scope.read(schema.BENCHMARK_EXAMPLES, {"benchmark": benchmark})
            choices = ex["choices"].map(lambda c: sum(len(x) for x in c) if c is not None and len(c) else 0)
            read = ex["input_text"].str.len() + choices.where(choices > 0, ex["target_text"].str.len())
            scope.memo[key] = float(read.sum())
        except Exception:  # not stored yet: an average benchmark
            scope.memo[key] = 1.0
    return scope.memo[key]


@dataclass(frozen=True)
class Upstream:
    """An asset this one depends on: the partitions sharing its keys (``same``) or all of them (``all``)."""

    asset: str
    mapping: Literal["same", "all"] = "same"


class Markdown(str):
    """Metadata text shown rendered as Markdown in the UI."""


class FilePath(str):
    """Metadata naming a file or folder (shown as a path in the UI)."""


def table_md(df: pd.DataFrame, max_rows: int = 20, floatfmt: str = ".3f") -> Markdown:
    """A small Markdown table for the UI."""
    if df.empty:
        return Markdown("_(no rows)_")
    return Markdown(df.head(max_rows).to_markdown(index=False, floatfmt=floatfmt))


@dataclass
class Output:
    """What a compute function returns: rows per table (the key columns are filled in where missing),
    metadata for the UI, and ``info`` stored with each written partition (e.g. the figures it drew)."""

    tables: Mapping[str, pd.DataFrame]
    metadata: dict[str, Any] = field(default_factory=dict)
    info: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Call:
    """One partition's computation: its scope, keys and fingerprinted inputs, and a log."""

    scope: Scope
    keys: Keys
    inputs: Mapping[str, Any]
    log: Callable[[str], None] = print
    fingerprint: str = ""

    @property
    def profile(self) -> str:
        return self.scope.profile

    def read(self, table: str, **keys: str) -> pd.DataFrame:
        return self.scope.read(table, keys)


#: Checks the factory runs on every partition (on the stored rows too, when a partition is skipped).
NON_EMPTY, MEASURE_RANGES, SCORES_IN_UNIT = "partition_non_empty", "values_finite_in_range", "scores_in_unit_interval"


@dataclass(frozen=True)
class Check:
    """A check of a computation's own: ``outcome(scope, keys, tables)`` is None when the partition passes, else
    what failed (JSON-able). It runs where the built-in checks run, on stored rows too, and only warns."""

    name: str
    description: str
    outcome: Callable[[Scope, Keys, dict[str, pd.DataFrame]], dict[str, Any] | None]


@dataclass(frozen=True)
class Computation:
    """A table asset: declared once, built per profile by the Dagster factory.

    ``inputs(scope, keys)`` returns everything the rows depend on (parameters and upstream fingerprints, e.g.
    from :meth:`Scope.upstream`); its fingerprint decides freshness. ``compute(call)`` returns an
    :class:`Output` with a frame for each table in ``writes``. ``storage_keys`` maps the partition keys to
    the keys the rows are stored under (several assets may write one table: they add their own name).
    """

    name: str
    description: str
    group: str
    partitioning: Partitioning | None
    writes: tuple[str, ...]
    inputs: Callable[[Scope, Keys], dict[str, Any]]
    compute: Callable[[Call], Output]
    upstream: tuple[Upstream, ...] = ()
    kinds: tuple[str, ...] = ("python", "parquet")
    pool: str | None = None  # "model": loads a language model (one per core at most); "cpu_heavy"
    code_version: str = "1"
    storage_keys: Callable[[Keys], dict[str, str]] = dict
    profile_free: bool = False  # rows shared by every profile (the measure registry)
    figures: bool = False  # fresh only while the figures recorded with the rows still exist
    retries: int = 0  # for transient faults (a model load); bad input is never retried
    refresh_after_upstream: bool = False  # re-materialized by its automation condition once upstream changed
    checks: tuple[str, ...] = ()
    own_checks: tuple[Check, ...] = ()
    cost: Callable[[Scope, Keys], float] | None = None  # relative work of a partition (balances parallel runs)
    partitions_per_run: int | None = None  # at most this many partitions in one run of a UI backfill

    def __post_init__(self) -> None:
        unknown = [t for t in self.writes if t not in schema.TABLES]
        if unknown:
            raise ValueError(f"computation {self.name}: unknown table(s) {unknown}")
        if any(t in schema.SIMILARITY_TABLES for t in self.writes) and MEASURE_RANGES not in self.checks:
            object.__setattr__(self, "checks", (*self.checks, MEASURE_RANGES))

    @property
    def check_names(self) -> tuple[str, ...]:
        return (*self.checks, *(c.name for c in self.own_checks))

    @property
    def dimensions(self) -> tuple[str, ...]:
        return DIMENSIONS[self.partitioning]

    @property
    def writes_measures(self) -> bool:
        return any(t in schema.SIMILARITY_TABLES for t in self.writes)

    def table_profile(self, scope: Scope) -> str | None:
        return None if self.profile_free else scope.profile

    def fingerprint(self, scope: Scope, keys: Keys) -> str:
        """The fingerprint the partition's rows must carry to be fresh (:class:`NotMaterialized` when an
        upstream partition is missing)."""
        return partition_fingerprint(self.name, self.code_version, **self.inputs(scope, keys))

    def stored(self, scope: Scope, keys: Keys) -> list[StoredPartition | None]:
        wh, profile, at = scope.warehouse, self.table_profile(scope), self.storage_keys(keys)
        return [wh.stored(t, profile, at) for t in self.writes]

    def is_fresh(self, scope: Scope, keys: Keys, fp: str) -> bool:
        """Every table's partition is stored with ``fp`` (and, for figure-drawing assets, its figures exist)."""
        stored = self.stored(scope, keys)
        if not all(s is not None and s.fingerprint == fp for s in stored):
            return False
        if not all(Path(p).exists() for p in stored[0].info.get("files", [])):  # e.g. an index in the cache
            return False
        return not self.figures or all(Path(p).exists() for p in stored[0].info.get("plots", []))
