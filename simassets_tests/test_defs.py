"""The code location as a reviewable whole: a snapshot of every asset spec, job, sensor and schedule (a change to the
graph is a visible diff in ``snapshots/code_location.json``), and the layering rules the architecture rests on.

After an intended change to the graph: ``SIMASSETS_UPDATE_SNAPSHOTS=1 pytest simassets_tests/test_defs.py``.
"""

from __future__ import annotations

import ast
import contextlib
import json
import os
from pathlib import Path

import dagster as dg

from simassets import runner
from simassets.core.paths import REPO_ROOT
from simassets.defs import factory

SNAPSHOT = Path(__file__).parent / "snapshots" / "code_location.json"


def _partitions(pdef: dg.PartitionsDefinition | None) -> str | None:
    if pdef is None:
        return None
    if isinstance(pdef, dg.MultiPartitionsDefinition):
        return " x ".join(f"{d.name}={d.partitions_def.name}" for d in pdef.partitions_defs)
    return pdef.name


def _mapping(a: dg.AssetsDefinition, dep: dg.AssetKey) -> str | None:
    """The partition mapping of a dependency: declared (e.g. all partitions), or Dagster's default for the pair."""
    if a.partitions_def is None:
        return None
    mapping = a.get_partition_mapping(dep)
    return type(mapping).__name__ if mapping is not None else "default"


def code_location_snapshot() -> dict:
    repo = runner.repository()
    assets = {}
    for key, a in sorted(repo.assets_defs_by_key.items(), key=lambda kv: kv[0].to_user_string()):
        profile, name = factory.profile_and_name(key)
        comp = factory.COMPUTATIONS[name]
        condition = a.automation_conditions_by_key.get(key)
        assets[key.to_user_string()] = {
            "group": a.group_names_by_key[key],
            "partitions": _partitions(a.partitions_def),
            "deps": {d.to_user_string(): _mapping(a, d) for d in sorted(a.dependency_keys, key=lambda k: k.to_user_string())},
            "kinds": sorted(a.specs_by_key[key].kinds),
            "pool": a.op.pool,
            "code_version": a.code_versions_by_key[key],
            "automation_condition": condition.get_label() if condition is not None else None,
            "backfill_policy": str(a.backfill_policy) if a.backfill_policy else None,
            "retries": a.op.retry_policy.max_retries if a.op.retry_policy else 0,
            "checks": sorted(c.name for c in a.check_specs),
            "tags": dict(sorted(a.specs_by_key[key].tags.items())),
            "writes": list(comp.writes),
        }
    return {
        "assets": assets,
        "jobs": sorted(j.name for j in repo.get_all_jobs()),
        "sensors": {s.name: {"status": s.default_status.value, "interval_s": s.minimum_interval_seconds}
                    for s in sorted(repo.sensor_defs, key=lambda s: s.name)},
        "schedules": {s.name: {"status": s.default_status.value, "cron": s.cron_schedule, "job": s.job_name}
                      for s in sorted(repo.schedule_defs, key=lambda s: s.name)},
    }


def test_the_code_location_matches_its_snapshot():
    now = json.dumps(code_location_snapshot(), indent=1, sort_keys=True) + "\n"
    if os.environ.get("SIMASSETS_UPDATE_SNAPSHOTS") == "1" or not SNAPSHOT.exists():
        SNAPSHOT.parent.mkdir(exist_ok=True)
        SNAPSHOT.write_text(now)
    assert now == SNAPSHOT.read_text(), (
        "the asset graph changed; review the diff of snapshots/code_location.json after "
        "`SIMASSETS_UPDATE_SNAPSHOTS=1 pytest simassets_tests/test_defs.py`")


def test_each_profile_has_the_same_graph_and_only_its_own_partitions():
    snap = code_location_snapshot()["assets"]
    by_profile: dict[str, dict[str, dict]] = {}
    for key, spec in snap.items():
        profile, name = key.split("/")
        by_profile.setdefault(profile, {})[name] = spec
    assert set(by_profile) == {"quick", "full"} and by_profile["quick"].keys() == by_profile["full"].keys()
    for profile, specs in by_profile.items():
        for name, spec in specs.items():
            assert spec["group"].startswith(f"{profile}_") and spec["tags"]["simassets/profile"] == profile
            assert all(d.startswith(f"{profile}/") for d in spec["deps"]), (name, spec["deps"])
            parts = (spec["partitions"] or "").replace(" x ", "=").split("=")[1::2] or [spec["partitions"]]
            assert all(p is None or p.startswith(f"{profile}_") for p in parts), (name, spec["partitions"])


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
    return out


def test_core_never_imports_dagster_and_defs_never_import_the_runner():
    """The science is plain Python (simassets/core imports no Dagster and nothing above it); the Dagster wiring
    (simassets/defs) never imports the runner or the CLI, which sit on top of it."""
    root = REPO_ROOT / "simassets"
    for path in sorted((root / "core").rglob("*.py")):
        imports = _imports(path)
        assert not {m for m in imports if m == "dagster" or m.startswith("dagster.")}, path
        assert not {m for m in imports if m.startswith(("simassets.defs", "simassets.runner", "simassets.cli"))}, path
    for path in sorted((root / "defs").rglob("*.py")):
        imports = _imports(path)
        assert not {m for m in imports if m.startswith(("simassets.runner", "simassets.cli", "simassets.definitions"))}, path
    assert "simassets.defs" in _imports(root / "runner.py")  # the runner plans through defs (planning, factory)
    runner_source = (root / "runner.py").read_text(encoding="utf-8")
    assert "all_assets" not in runner_source and "_freshness" not in runner_source  # no hand-kept lists


def test_range_metadata_reads_the_dynamic_partitions_once_per_question(monkeypatch):
    """A run over a range of a two-dynamic-dimension partitioning records each partition's own metadata, and with
    ``dynamic_partitions_read_once`` asks storage each dynamic-partitions question once, instead of six times per
    partition for Dagster's range check."""
    from collections import Counter

    from simassets.defs.factory import dynamic_partitions_read_once

    reads: Counter = Counter()
    for name in ("get_dynamic_partitions", "has_dynamic_partition"):
        original = getattr(dg.DagsterInstance, name)
        monkeypatch.setattr(dg.DagsterInstance, name,
                            lambda self, *a, _o=original, _n=name, **k: reads.update([_n]) or _o(self, *a, **k))
    pdef = dg.MultiPartitionsDefinition({"corpus": dg.DynamicPartitionsDefinition(name="c"),
                                         "benchmark": dg.DynamicPartitionsDefinition(name="b")})

    def thing(once: bool) -> dg.AssetsDefinition:
        @dg.asset(name=f"thing_{once}", partitions_def=pdef)
        def _thing(context) -> dg.MaterializeResult:  # (annotations are strings here: Dagster reads none)
            with dynamic_partitions_read_once(context.instance) if once else contextlib.nullcontext():
                for pk in context.partition_keys:
                    context.add_asset_metadata({"partition": pk}, partition_key=pk)
            return dg.MaterializeResult()

        return _thing

    counts = {}
    for once in (False, True):
        asset = thing(once)
        instance = dg.DagsterInstance.ephemeral()
        instance.add_dynamic_partitions("c", ["c1", "c2", "c3"])
        instance.add_dynamic_partitions("b", ["b1", "b2", "b3", "b4"])
        keys = pdef.get_partition_keys(dynamic_partitions_store=instance)
        reads.clear()
        result = dg.materialize([asset], instance=instance, tags={"dagster/asset_partition_range_start": keys[0],
                                                                  "dagster/asset_partition_range_end": keys[-1]})
        counts[once] = sum(reads.values())
        mats = result.asset_materializations_for_node(f"thing_{once}")
        assert sorted((m.partition, m.metadata["partition"].value) for m in mats) == sorted((k, k) for k in keys)
        assert "get_dynamic_partitions" not in vars(instance)  # the instance answers from storage again
    assert counts[True] + 6 * 11 <= counts[False], counts  # 12 partitions: at least 6 reads saved on all but one


def test_a_nested_read_once_block_keeps_the_outer_cache():
    from simassets.defs.factory import dynamic_partitions_read_once

    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("c", ["c1"])
    with dynamic_partitions_read_once(instance):
        outer = vars(instance)["get_dynamic_partitions"]
        assert instance.get_dynamic_partitions("c") == ["c1"]
        with dynamic_partitions_read_once(instance):
            assert vars(instance)["get_dynamic_partitions"] is outer
        assert vars(instance)["get_dynamic_partitions"] is outer  # the inner exit did not drop the outer cache
        instance.add_dynamic_partitions("c", ["c2"])
        assert instance.get_dynamic_partitions("c") == ["c1"]  # read once: the block's answer
    assert "get_dynamic_partitions" not in vars(instance) and instance.get_dynamic_partitions("c") == ["c1", "c2"]
