"""Headless materialization of the whole graph, partitions included, in one process.

Dagster launches one run per partition; starting a process per run would dominate a study's time,
so the runner materializes partitions in-process (models, tokenizers and the embedder load once)
in dependency order, printing progress, and reports which partitions were skipped as unchanged.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg

from simassets.core import paths


def ensure_instance_dir(home: Path | None = None) -> Path:
    """The Dagster instance folder under the warehouse home (telemetry off, sqlite storage)."""
    d = (home or paths.home()) / "dagster_home"
    d.mkdir(parents=True, exist_ok=True)
    cfg = d / "dagster.yaml"
    if not cfg.exists():
        cfg.write_text("telemetry:\n  enabled: false\n")
    return d


def get_instance(home: Path | None = None) -> dg.DagsterInstance:
    d = ensure_instance_dir(home)
    os.environ["DAGSTER_HOME"] = str(d)
    return dg.DagsterInstance.get()


def all_assets() -> list:
    from simassets.defs.benchmarks import benchmark_examples
    from simassets.defs.corpora import corpus_documents
    from simassets.defs.embeddings import benchmark_embeddings, corpus_embeddings
    from simassets.defs.evaluation import benchmark_evaluation
    from simassets.defs.similarity import embedding_similarity
    from simassets.defs.studies import correlations, measure_registry

    return [corpus_documents, corpus_embeddings, benchmark_examples, benchmark_embeddings, embedding_similarity,
            benchmark_evaluation, measure_registry, correlations]


def freshness_functions() -> dict[str, Callable]:
    """Asset name -> function(study, partition_key) -> Freshness, shared with the asset bodies."""
    from simassets.defs.benchmarks import benchmark_examples_freshness
    from simassets.defs.corpora import corpus_documents_freshness
    from simassets.defs.embeddings import benchmark_embeddings_freshness, corpus_embeddings_freshness
    from simassets.defs.evaluation import benchmark_evaluation_freshness
    from simassets.defs.similarity import embedding_similarity_freshness
    from simassets.defs.studies import correlations_freshness, measure_registry_freshness

    return {
        "corpus_documents": corpus_documents_freshness, "corpus_embeddings": corpus_embeddings_freshness,
        "benchmark_examples": benchmark_examples_freshness, "benchmark_embeddings": benchmark_embeddings_freshness,
        "embedding_similarity": embedding_similarity_freshness, "benchmark_evaluation": benchmark_evaluation_freshness,
        "measure_registry": measure_registry_freshness, "correlations": correlations_freshness,
    }


def all_fresh(step: "Step", study) -> bool:
    """True when every asset of a partitioned step is stored with the fingerprint it would compute now."""
    fns = freshness_functions()
    if not all(a in fns for a in step.assets):
        return False
    wh = study.warehouse()
    try:
        return all(fns[a](study, step.partition_key).fresh(wh, None if a == "measure_registry" else study.profile_name)
                   for a in step.assets)
    except Exception:  # an upstream not materialized yet, etc.: let the run decide and report
        return False


def sync_partitions(instance: dg.DagsterInstance, catalog, models: Iterable[str]) -> dict[str, list[str]]:
    """Make the dynamic partitions match the catalog and the registry; returns what changed."""
    wanted = {"corpus": sorted(catalog.corpora), "benchmark": sorted(catalog.benchmarks), "model": sorted(models)}
    changes: dict[str, list[str]] = {}
    for name, keys in wanted.items():
        have = set(instance.get_dynamic_partitions(name))
        add = [k for k in keys if k not in have]
        remove = sorted(have - set(keys))
        if add:
            instance.add_dynamic_partitions(name, add)
        for k in remove:
            instance.delete_dynamic_partition(name, k)
        if add or remove:
            changes[name] = [f"+{k}" for k in add] + [f"-{k}" for k in remove]
    return changes


QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


@dataclass(frozen=True)
class Step:
    assets: tuple[str, ...]
    partition_key: str | None
    label: str


@dataclass
class RunReport:
    computed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0


def plan(catalog, profile: str, model_ids: Sequence[str]) -> list[Step]:
    """Every (assets, partition) step of a profile's study, in dependency order."""
    corpora = [c.name for c in catalog.corpora_for(profile)]
    benches = [b.name for b in catalog.benchmarks_for(profile)]
    steps = [Step(("corpus_documents", "corpus_embeddings"), c, c) for c in corpora]
    steps += [Step(("benchmark_examples", "benchmark_embeddings"), b, b) for b in benches]
    steps += [Step(("embedding_similarity",), dg.MultiPartitionKey({"corpus": c, "benchmark": b}), f"{c} x {b}")
              for c in corpora for b in benches]
    steps += [Step(("benchmark_evaluation",), dg.MultiPartitionKey({"model": m, "benchmark": b}), f"{m} x {b}")
              for m in model_ids for b in benches]
    steps.append(Step(("measure_registry", "correlations"), None, "study"))
    return steps


def _materializations(result: dg.ExecuteInProcessResult) -> list[dg.AssetMaterialization]:
    return [e.event_specific_data.materialization for e in result.get_asset_materialization_events()]  # type: ignore[union-attr]


def execute(steps: Sequence[Step], instance: dg.DagsterInstance, resources: dict,
            progress: Callable[[str], None] = print, fail_fast: bool = False) -> RunReport:
    """Materialize the steps in order in this process; a failing step is reported and the rest go on."""
    report = RunReport()
    assets = all_assets()
    study = resources["study"]
    start = time.perf_counter()
    for i, step in enumerate(steps, start=1):
        t0 = time.perf_counter()
        label = f"{'+'.join(step.assets)}[{step.label}]"
        if all_fresh(step, study):
            report.skipped.append(label)
            progress(f"[{i}/{len(steps)}] skipped  {label}: unchanged since its last materialization")
            continue
        try:
            result = dg.materialize(assets, selection=list(step.assets), partition_key=step.partition_key,
                                    instance=instance, resources=resources, raise_on_error=False,
                                    tags={"simassets/runner": "cli"}, run_config=QUIET)
            ok, error = result.success, ""
            if not ok:
                failures = [e for e in result.all_events if e.is_step_failure]
                error = failures[0].event_specific_data.error.message.strip().splitlines()[-1] if failures else "failed"  # type: ignore[union-attr]
        except Exception as exc:  # a definition/config error: report and go on
            ok, error, result = False, f"{type(exc).__name__}: {exc}", None
        took = time.perf_counter() - t0
        if not ok:
            report.failed.append((label, error))
            progress(f"[{i}/{len(steps)}] FAILED  {label} ({took:.1f}s): {error}")
            if fail_fast:
                break
            continue
        mats = _materializations(result) if result else []
        was_skipped = bool(mats) and all(m.metadata.get("skipped") is not None for m in mats)
        (report.skipped if was_skipped else report.computed).append(label)
        progress(f"[{i}/{len(steps)}] {'skipped ' if was_skipped else 'computed'} {label} ({took:.1f}s)")
    report.seconds = time.perf_counter() - start
    return report
