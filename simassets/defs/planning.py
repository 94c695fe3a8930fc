"""What is stale and how to run it: the one planner behind ``simassets run``, the sync sensors and the schedules.

The plan is derived from the code location: each profile's computations (``factory.COMPUTATIONS``, in the asset
graph's topological order) grouped into *units* -- the assets of one partitioning, run together over a range of
partitions in one Dagster run (the model loads once, the bookkeeping is paid once). A unit's stale partitions
come from the same fingerprint functions the assets call (:meth:`Computation.fingerprint`), and are cut into
*work*: rectangles of partitions that are contiguous in the instance's dynamic-partition order, which is
exactly what a Dagster partition-range run covers.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import dagster as dg
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from simassets.core.computation import DIMENSIONS, Computation, Scope
from simassets.core.hashing import fingerprint
from simassets.defs import factory

PROFILE_TAG, WORK_TAG = factory.PROFILE_TAG, "simassets/work"
EXPERIMENT_GROUPS = frozenset({"attribution", "interventions"})  # training interventions: only when asked


# --------------------------------------------------------------------------- selection
@dataclass(frozen=True)
class Selection:
    """Which part of a profile to plan: the training interventions (``experiments``), one declared study (its
    benchmarks, corpora, models and study partitions), some models, assets left out, and whether to include the
    assets that refresh by their automation condition (the sensors leave those to it)."""

    experiments: bool = False
    study: str | None = None
    models: tuple[str, ...] | None = None
    skip: tuple[str, ...] = ()
    automated: bool = True

    def computations(self) -> list[Computation]:
        unknown = sorted(set(self.skip) - set(factory.COMPUTATIONS))
        if unknown:
            raise ValueError(f"cannot skip unknown asset(s) {unknown}; assets: {sorted(factory.COMPUTATIONS)}")
        return [c for c in topological(factory.COMPUTATIONS.values())
                if c.name not in self.skip and (self.experiments or c.group not in EXPERIMENT_GROUPS)
                and (self.automated or not c.refresh_after_upstream)]

    def values(self, scope: Scope, dimension: str) -> list[str]:
        """The profile's keys of a dimension that the selection keeps, in catalog order."""
        values = scope.values(dimension)
        if self.study is not None:
            from simassets.core.studies import get_study

            spec = get_study(scope.catalog, self.study)
            keep = {"corpus": spec.select_corpora(scope.catalog, scope.profile),
                    "benchmark": spec.select_benchmarks(scope.catalog, scope.profile),
                    "model": [m for m in values if not spec.models or m in spec.models], "study": [self.study]}
            values = [v for v in values if v in keep[dimension]]
        if dimension == "model" and self.models is not None:
            values = [v for v in values if v in self.models]
        return values


def topological(computations: Iterable[Computation]) -> list[Computation]:
    """Computations with every upstream before its downstream (declaration order otherwise)."""
    comps = list(computations)
    names = {c.name for c in comps}
    done: list[Computation] = []
    seen: set[str] = set()
    while len(done) < len(comps):
        ready = [c for c in comps if c.name not in seen
                 and all(u.asset in seen or u.asset not in names for u in c.upstream)]
        if not ready:
            raise ValueError(f"the asset graph has a cycle among {sorted(names - seen)}")
        for c in ready:
            done.append(c)
            seen.add(c.name)
    return done


# --------------------------------------------------------------------------- units
@dataclass(frozen=True)
class Unit:
    """The assets of one partitioning, run together (in topological order) over a range of partitions once the
    units they read are done: ``needs`` holds the indices (in :func:`units`) of those units."""

    partitioning: str | None
    computations: tuple[Computation, ...]
    needs: frozenset[int] = frozenset()

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.computations)


def units(selection: Selection, split: bool = True) -> list[Unit]:
    """The selected computations grouped into units -- the assets of one partitioning, run together in one run per
    range (a model loads once for its evaluation and its model-based measures) -- in an order where every unit comes
    after the units it needs. A unit starts as soon as those are done (not when a whole level is).

    With ``split``, an asset that must wait for a deeper unit than the rest of its partitioning's assets
    (``contamination_gain`` reads every corpus's ``text_similarity``; the evaluation beside it reads only the
    benchmark's examples) forms a unit of its own, so the others do not wait with it: in ``simassets run`` the
    evaluation, the longest step, starts as soon as the benchmarks are in, beside the corpus x benchmark measures.
    The sensors plan without it: they request only work whose upstream is stored, so for them the split would gain
    nothing and cost a run (a new model's evaluations and its contamination gain go in the same runs)."""
    comps = selection.computations()
    part_of = {c.name: c.partitioning for c in comps}
    level: dict[str, int] = {}  # the earliest wave an asset can run in
    for c in comps:  # topological: upstreams first
        level[c.name] = max((level[u.asset] + (part_of[u.asset] != c.partitioning)
                             for u in c.upstream if u.asset in part_of), default=0)
        for u in c.upstream:
            if part_of.get(u.asset, ...) == c.partitioning and u.mapping == "all":
                raise ValueError(f"{c.name} reads all partitions of {u.asset}, which runs in its own unit")
    group = {c.name: (level[c.name] if split else 0, c.partitioning) for c in comps}
    groups = sorted(dict.fromkeys(group.values()), key=lambda g: g[0])  # stable: declaration order within a level
    needs: dict[tuple, set[tuple]] = {g: set() for g in groups}
    for c in comps:
        needs[group[c.name]] |= {group[u.asset] for u in c.upstream if u.asset in group} - {group[c.name]}
    order: list[tuple] = []
    while len(order) < len(groups):
        ready = [g for g in groups if g not in order and needs[g] <= set(order)]
        if not ready:
            left = sorted(str(g[1]) for g in groups if g not in order)
            raise ValueError(f"units depend on each other in a cycle: {left}")
        order += ready
    index = {g: i for i, g in enumerate(order)}
    return [Unit(g[1], tuple(c for c in comps if group[c.name] == g), frozenset(index[n] for n in needs[g]))
            for g in order]


def waves(all_units: Sequence[Unit]) -> list[list[int]]:
    """Unit indices by depth (for display: a unit starts as soon as its own needs are done)."""
    depth: dict[int, int] = {}
    for i, u in enumerate(all_units):
        depth[i] = max((depth[n] + 1 for n in u.needs), default=0)
    out: list[list[int]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
    for i, d in depth.items():
        out[d].append(i)
    return out


# --------------------------------------------------------------------------- work
@dataclass(frozen=True)
class Work:
    """One run: some assets of a unit over a rectangle of partitions (contiguous in the instance's order)."""

    profile: str
    partitioning: str | None
    assets: tuple[str, ...]
    rectangle: tuple[tuple[str, tuple[str, ...]], ...]  # (dimension, values) per dimension; () unpartitioned
    input_fingerprint: str = ""  # of every covered partition's inputs: the same work is never requested twice

    @property
    def keys(self) -> list[dict[str, str]]:
        dims = [d for d, _ in self.rectangle]
        return [dict(zip(dims, combo)) for combo in itertools.product(*(v for _, v in self.rectangle))]

    @property
    def size(self) -> int:
        n = 1
        for _, values in self.rectangle:
            n *= len(values)
        return n if self.rectangle else 1

    @property
    def pdef(self) -> dg.PartitionsDefinition | None:
        return factory.partitions_def(self.profile, self.partitioning)

    def corner(self, which: int) -> dict[str, str]:
        return {d: values[which] for d, values in self.rectangle}

    @property
    def partition_key(self) -> str | None:
        """The single partition of a one-partition run (None for a range or an unpartitioned run)."""
        return factory.partition_key(self.pdef, self.corner(0)) if self.size == 1 and self.rectangle else None

    def tags(self) -> dict[str, str]:
        tags = {PROFILE_TAG: self.profile, WORK_TAG: self.work_id}
        if self.rectangle and self.size > 1:
            tags[ASSET_PARTITION_RANGE_START_TAG] = factory.partition_key(self.pdef, self.corner(0)) or ""
            tags[ASSET_PARTITION_RANGE_END_TAG] = factory.partition_key(self.pdef, self.corner(-1)) or ""
        return tags

    @property
    def work_id(self) -> str:
        return fingerprint([self.profile, self.assets, self.rectangle])[:16]

    @property
    def asset_keys(self) -> list[dg.AssetKey]:
        return [factory.asset_key(self.profile, a) for a in self.assets]

    @property
    def label(self) -> str:
        what = "+".join(self.assets)
        if not self.rectangle:
            return f"{self.profile}/{what}"
        plural = {"corpus": "corpora", "study": "studies"}
        parts = [vals[0] if len(vals) == 1 else f"{len(vals)} {plural.get(dim, dim + 's')}" for dim, vals in self.rectangle]
        return f"{self.profile}/{what}[{' x '.join(parts)}]"

    def split(self, n: int, weight=None) -> list[Work]:
        """At most ``n`` contiguous pieces along the dimension with the most values, of nearly equal total
        ``weight(keys)`` (default: equal counts)."""
        if n <= 1 or self.size <= 1:
            return [self]
        i = max(range(len(self.rectangle)), key=lambda j: len(self.rectangle[j][1]))
        dim, values = self.rectangle[i]
        k = min(n, len(values))
        if k <= 1:
            return [self]
        others = [dv for j, dv in enumerate(self.rectangle) if j != i]
        w = [sum(weight({**dict(zip([d for d, _ in others], combo)), dim: v}) if weight else 1.0
                 for combo in itertools.product(*(vals for _, vals in others))) for v in values]
        total, bounds, acc = sum(w), [0], 0.0
        for j, x in enumerate(w):
            acc += x
            if len(bounds) < k and acc >= total * len(bounds) / k and len(values) - (j + 1) >= k - len(bounds):
                bounds.append(j + 1)
        bounds.append(len(values))
        return [Work(self.profile, self.partitioning, self.assets,
                     self.rectangle[:i] + ((dim, values[a:b]),) + self.rectangle[i + 1:], self.input_fingerprint)
                for a, b in zip(bounds, bounds[1:]) if b > a]


def weight_of(work: Work, scope: Scope):
    """The relative work of one partition of ``work`` (the sum of its assets' costs; 1 when none declares one)."""
    costs = [factory.COMPUTATIONS[a].cost for a in work.assets if factory.COMPUTATIONS[a].cost]
    if not costs:
        return None
    return lambda keys: sum(c(scope, keys) for c in costs)


def _runs(values: Sequence[str], order: Sequence[str]) -> list[tuple[str, ...]]:
    """``values`` cut into runs that are contiguous in ``order``."""
    pos = {v: i for i, v in enumerate(order)}
    ordered = sorted(values, key=lambda v: pos[v])
    out: list[list[str]] = []
    for v in ordered:
        if out and pos[v] == pos[out[-1][-1]] + 1:
            out[-1].append(v)
        else:
            out.append([v])
    return [tuple(r) for r in out]


def rectangles(keys: Sequence[Mapping[str, str]], dims: Sequence[str],
               order: Mapping[str, Sequence[str]]) -> list[tuple[tuple[str, tuple[str, ...]], ...]]:
    """Cover ``keys`` exactly with few rectangles that are contiguous in ``order`` (as Dagster's single-run
    backfills do: the whole block when it is one, else grouped by the dimension with fewer distinct values)."""
    if not dims:
        return [()]
    if not keys:
        return []
    if len(dims) == 1:
        return [((dims[0], run),) for run in _runs([k[dims[0]] for k in keys], order[dims[0]])]
    a, b = dims
    values = {d: sorted({k[d] for k in keys}, key=list(order[d]).index) for d in dims}
    block = {(x, y) for x in values[a] for y in values[b]}
    have = {(k[a], k[b]) for k in keys}
    if have == block and all(len(_runs(values[d], order[d])) == 1 for d in dims):
        return [((a, tuple(values[a])), (b, tuple(values[b])))]
    group, other = (a, b) if len(values[a]) <= len(values[b]) else (b, a)
    by_group: dict[str, list[str]] = {}
    for k in keys:
        by_group.setdefault(k[group], []).append(k[other])
    pieces: list[tuple[list[str], tuple[str, ...]]] = []  # (group values, run of the other dimension)
    pos = {v: i for i, v in enumerate(order[group])}
    for g in sorted(by_group, key=lambda v: pos[v]):
        for run in _runs(by_group[g], order[other]):
            same = [p for p in pieces if p[1] == run and pos[p[0][-1]] + 1 == pos[g]]
            if same:
                same[0][0].append(g)
            else:
                pieces.append(([g], run))
    return [tuple(sorted(((group, tuple(gs)), (other, run)), key=lambda dv: dims.index(dv[0]))) for gs, run in pieces]


@dataclass
class UnitPlan:
    """A unit's partitions: stale ones as work, those waiting on an upstream (all of the unit's stale assets, or
    some), errors, fresh ones."""

    work: list[Work] = field(default_factory=list)
    waiting: list[dict[str, str]] = field(default_factory=list)
    waiting_assets: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    fresh: list[dict[str, str]] = field(default_factory=list)


def stale_assets(unit: Unit, scope: Scope, keys: Mapping[str, str]) -> tuple[list[str], list[str], str]:
    """(stale, waiting) assets of the unit at one partition. An asset is stale when its fingerprint differs from the
    stored one, or an asset it reads in the unit is stale; it waits when an upstream partition it reads is missing
    and no stale asset of the unit writes it. The third value is the first stale asset's fingerprint."""
    stale: list[str] = []
    waiting: list[str] = []
    first = ""
    for comp in unit.computations:
        ups = {u.asset for u in comp.upstream}
        if ups & set(waiting):
            waiting.append(comp.name)
            continue
        scope.memo["missing"] = set()
        try:
            fp = comp.fingerprint(scope, keys)
        finally:
            missing = scope.memo.pop("missing")
        if missing:
            produced = {t for name in stale for t in factory.COMPUTATIONS[name].writes}
            (stale if missing <= produced else waiting).append(comp.name)
        elif ups & set(stale) or not comp.is_fresh(scope, keys, fp):
            first = first or fp
            stale.append(comp.name)
    return stale, waiting, first


def plan_unit(unit: Unit, scope: Scope, selection: Selection, order: Mapping[str, Sequence[str]],
              exclude: Iterable[tuple[str, str | None]] = ()) -> UnitPlan:
    """Which partitions of ``unit`` need a run now (:func:`stale_assets` per partition), grouped into work by
    identical asset sets. ``exclude`` holds (asset, partition key) pairs already covered by runs in flight."""
    dims = DIMENSIONS[unit.partitioning]
    keys = [dict(zip(dims, combo)) for combo in itertools.product(*(selection.values(scope, d) for d in dims))]
    pdef = factory.partitions_def(scope.profile, unit.partitioning)
    excluded = set(exclude)
    out, by_assets = UnitPlan(), {}
    for keys_ in keys:
        pk = factory.partition_key(pdef, keys_)
        try:
            stale, waiting, fp = stale_assets(unit, scope, keys_)
        except Exception as exc:  # a broken catalog entry or model: report it, plan the rest
            out.errors.append(f"{'+'.join(unit.names)} {keys_}: {type(exc).__name__}: {exc}")
            continue
        out.waiting_assets += [(a, keys_) for a in waiting]
        stale = [a for a in stale if (a, pk) not in excluded]
        if not stale:
            (out.waiting if waiting else out.fresh).append(keys_)
            continue
        by_assets.setdefault(tuple(stale), []).append((keys_, fp))
    for assets, items in by_assets.items():
        for rect in rectangles([k for k, _ in items], dims, order):
            covered = {tuple(sorted(k.items())) for k in Work(scope.profile, unit.partitioning, assets, rect).keys}
            fp = fingerprint(sorted((sorted(k.items()), f) for k, f in items if tuple(sorted(k.items())) in covered))
            out.work.append(Work(scope.profile, unit.partitioning, assets, rect, fp))
    return out


def dynamic_order(instance: dg.DagsterInstance, profile: str) -> dict[str, list[str]]:
    """Each dimension's keys in the instance's order (the order a partition range is resolved in)."""
    return {d: list(instance.get_dynamic_partitions(factory.partitions_name(profile, d)))
            for d in ("corpus", "benchmark", "model", "study")}


# --------------------------------------------------------------------------- partitions
def wanted_partitions(scope: Scope) -> dict[str, list[str]]:
    """Dynamic partitions name -> the keys the profile's catalog and registry declare, in their order."""
    return {factory.partitions_name(scope.profile, d): scope.values(d) for d in ("corpus", "benchmark", "model", "study")}


def partition_changes(instance: dg.DagsterInstance, scopes: Iterable[Scope]) -> dict[str, tuple[list[str], list[str]]]:
    """Dynamic partitions name -> (keys to add, keys to remove) so that every profile matches its catalog."""
    changes = {}
    for scope in scopes:
        for name, keys in wanted_partitions(scope).items():
            have = instance.get_dynamic_partitions(name)
            add, remove = [k for k in keys if k not in have], sorted(set(have) - set(keys))
            if add or remove:
                changes[name] = (add, remove)
    return changes


def sync_partitions(instance: dg.DagsterInstance, scopes: Iterable[Scope]) -> dict[str, list[str]]:
    """Make every profile's dynamic partitions match its catalog and registry; returns what changed.

    Safe against a concurrent sync (another ``simassets run`` or a sensor adding the same keys)."""
    scopes = list(scopes)
    for attempt in range(5):
        try:
            changes = partition_changes(instance, scopes)
            for name, (add, remove) in changes.items():
                if add:
                    instance.add_dynamic_partitions(name, add)
                for k in remove:
                    instance.delete_dynamic_partition(name, k)
            return {name: [f"+{k}" for k in add] + [f"-{k}" for k in remove] for name, (add, remove) in changes.items()}
        except Exception as exc:  # a concurrent sync inserted the same key first (unique index): re-read
            if attempt == 4 or "UNIQUE" not in str(exc).upper():
                raise
            time.sleep(0.2 * (attempt + 1))
    return {}


# --------------------------------------------------------------------------- runs in flight
IN_FLIGHT = (dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
             dg.DagsterRunStatus.STARTED)


def range_keys(profile: str, partitioning: str | None, start: str, end: str,
               order: Mapping[str, Sequence[str]]) -> list[str]:
    """The partition keys of a range run: a rectangle between two corners, in the instance's order (what
    Dagster resolves the range to)."""
    pdef = factory.partitions_def(profile, partitioning)
    a, b = factory.keys_of(pdef, start), factory.keys_of(pdef, end)
    spans = []
    for dim in DIMENSIONS[partitioning]:
        i, j = order[dim].index(a[dim]), order[dim].index(b[dim])
        spans.append([(dim, v) for v in order[dim][i:j + 1]])
    return [factory.partition_key(pdef, dict(combo)) or "" for combo in itertools.product(*spans)]


def in_flight(instance: dg.DagsterInstance, profile: str) -> set[tuple[str, str | None]]:
    """(asset, partition key) pairs targeted by the profile's runs that are queued or running."""
    out: set[tuple[str, str | None]] = set()
    order = None
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=list(IN_FLIGHT), tags={PROFILE_TAG: profile})):
        names = [k.path[-1] for k in run.asset_selection or ()]
        if not names:
            continue
        start, end = run.tags.get(ASSET_PARTITION_RANGE_START_TAG), run.tags.get(ASSET_PARTITION_RANGE_END_TAG)
        if start and end:
            order = order or dynamic_order(instance, profile)
            pkeys: list[str | None] = list(range_keys(profile, factory.COMPUTATIONS[names[0]].partitioning, start, end,
                                                      order))
        else:
            pkeys = [run.tags.get("dagster/partition")]
        out |= {(n, pk) for n in names for pk in pkeys}
    return out


def job_name(profile: str, partitioning: str | None) -> str:
    return f"{profile}__refresh_{partitioning or 'unpartitioned'}"


def run_request(work: Work, key_prefix: str = "", **tags: str) -> dg.RunRequest:
    """The run that does ``work``; its run key names the work and its inputs, so the same inputs are never
    requested twice by the same sensor (a failed partition is retried by the daily schedule)."""
    return dg.RunRequest(job_name=job_name(work.profile, work.partitioning), asset_selection=work.asset_keys,
                         partition_key=work.partition_key, tags={**work.tags(), **tags},
                         run_key=f"{key_prefix}{work.work_id}:{work.input_fingerprint[:16]}")
