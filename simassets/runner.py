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
    if not cfg.exists():  # written atomically: a concurrent `simassets run` never reads a half-written file
        paths.atomic_write_text(cfg, "telemetry:\n  enabled: false\n")
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
    from simassets.defs.studies import correlations, measure_agreement, measure_registry, per_example_analysis
    from simassets.defs.model_similarity import corpus_perplexity, model_similarity
    from simassets.defs.attribution import attribution_analysis, unlearning_runs
    from simassets.defs.interventions import alignment_vs_loss, finetune_runs
    from simassets.defs.task2vec import benchmark_task2vec, corpus_task2vec, task2vec_alignment
    from simassets.defs.text_similarity import text_similarity

    return [corpus_documents, corpus_embeddings, corpus_task2vec, benchmark_examples, benchmark_embeddings,
            benchmark_task2vec, embedding_similarity, text_similarity, task2vec_alignment, benchmark_evaluation,
            model_similarity, corpus_perplexity, measure_registry, correlations, measure_agreement, per_example_analysis,
            unlearning_runs, attribution_analysis, finetune_runs, alignment_vs_loss]


def freshness_functions() -> dict[str, Callable]:
    """Asset name -> function(study, partition_key) -> Freshness, shared with the asset bodies."""
    from simassets.defs.benchmarks import benchmark_examples_freshness
    from simassets.defs.corpora import corpus_documents_freshness
    from simassets.defs.embeddings import benchmark_embeddings_freshness, corpus_embeddings_freshness
    from simassets.defs.evaluation import benchmark_evaluation_freshness
    from simassets.defs.similarity import embedding_similarity_freshness
    from simassets.defs.studies import (correlations_freshness, measure_agreement_freshness,
                                        measure_registry_freshness, per_example_analysis_freshness)
    from simassets.defs.model_similarity import corpus_perplexity_freshness, model_similarity_freshness
    from simassets.defs.attribution import attribution_analysis_freshness, unlearning_runs_freshness
    from simassets.defs.interventions import alignment_vs_loss_freshness, finetune_runs_freshness
    from simassets.defs.task2vec import (benchmark_task2vec_freshness, corpus_task2vec_freshness,
                                         task2vec_alignment_freshness)
    from simassets.defs.text_similarity import text_similarity_freshness

    return {
        "corpus_documents": corpus_documents_freshness, "corpus_embeddings": corpus_embeddings_freshness,
        "benchmark_examples": benchmark_examples_freshness, "benchmark_embeddings": benchmark_embeddings_freshness,
        "embedding_similarity": embedding_similarity_freshness, "text_similarity": text_similarity_freshness,
        "benchmark_evaluation": benchmark_evaluation_freshness, "model_similarity": model_similarity_freshness,
        "corpus_perplexity": corpus_perplexity_freshness, "corpus_task2vec": corpus_task2vec_freshness,
        "benchmark_task2vec": benchmark_task2vec_freshness, "task2vec_alignment": task2vec_alignment_freshness,
        "unlearning_runs": unlearning_runs_freshness, "attribution_analysis": attribution_analysis_freshness,
        "finetune_runs": finetune_runs_freshness, "alignment_vs_loss": alignment_vs_loss_freshness,
        "measure_registry": measure_registry_freshness, "correlations": correlations_freshness,
        "measure_agreement": measure_agreement_freshness, "per_example_analysis": per_example_analysis_freshness,
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


def partition_changes(instance: dg.DagsterInstance, catalog, models: Iterable[str]) -> dict[str, tuple[list[str], list[str]]]:
    """Dynamic partitions name -> (keys to add, keys to remove) so they match the catalog and the registry."""
    from simassets.core.studies import load_studies

    wanted = {"corpus": sorted(catalog.corpora), "benchmark": sorted(catalog.benchmarks), "model": sorted(models),
              "study": sorted(load_studies(catalog))}
    changes = {}
    for name, keys in wanted.items():
        have = set(instance.get_dynamic_partitions(name))
        add, remove = [k for k in keys if k not in have], sorted(have - set(keys))
        if add or remove:
            changes[name] = (add, remove)
    return changes


def sync_partitions(instance: dg.DagsterInstance, catalog, models: Iterable[str],
                    warehouse=None) -> dict[str, list[str]]:
    """Make the dynamic partitions match the catalog and the registry; returns what changed.

    With a ``warehouse``, the stored rows of removed corpora, benchmarks and models are deleted too.
    Safe against a concurrent sync (another ``simassets run`` or the sensor adding the same keys).
    """
    models = list(models)
    for attempt in range(5):
        try:
            changes = partition_changes(instance, catalog, models)
            for name, (add, remove) in changes.items():
                if add:
                    instance.add_dynamic_partitions(name, add)
                for k in remove:
                    instance.delete_dynamic_partition(name, k)
                    if warehouse is not None:
                        warehouse.delete_partitions_where(name, k)
            return {name: [f"+{k}" for k in add] + [f"-{k}" for k in remove] for name, (add, remove) in changes.items()}
        except Exception as exc:  # a concurrent sync inserted the same key first (unique index): re-read
            if attempt == 4 or "UNIQUE" not in str(exc).upper():
                raise
            time.sleep(0.2 * (attempt + 1))
    return {}


CORPUS_BENCHMARK_ASSETS = ("embedding_similarity", "text_similarity", "task2vec_alignment")
MODEL_BENCHMARK_ASSETS = ("benchmark_evaluation", "model_similarity")
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


def plan(catalog, profile: str, model_ids: Sequence[str], experiments: bool = False, study: str | None = None,
         skip: Sequence[str] = ()) -> list[Step]:
    """Every (assets, partition) step of a profile's study, in dependency order.

    ``experiments`` adds the training interventions: unlearning each corpus from each model (attribution)
    and fine-tuning on each corpus (alignment vs loss) -- about 20 and 8 minutes on 2 cores in the quick profile.
    ``study`` keeps only what one declared study needs (its benchmarks, corpora and models, and its own
    study assets); ``skip`` leaves the named assets out (e.g. an expensive measure you do not need now).
    """
    from simassets.core.studies import get_study, load_studies

    corpora = [c.name for c in catalog.corpora_for(profile)]
    benches = [b.name for b in catalog.benchmarks_for(profile)]
    studies = list(load_studies(catalog))
    if study is not None:
        spec = get_study(catalog, study)
        corpora, benches, studies = spec.select_corpora(catalog, profile), spec.select_benchmarks(catalog, profile), [study]
        model_ids = [m for m in model_ids if not spec.models or m in spec.models]
    known = {a.key.to_user_string() for a in all_assets()}
    unknown = sorted(set(skip) - known)
    if unknown:
        raise ValueError(f"cannot skip unknown asset(s) {unknown}; assets: {sorted(known)}")
    steps = [Step(("corpus_documents", "corpus_embeddings", "corpus_task2vec"), c, c) for c in corpora]
    steps += [Step(("benchmark_examples", "benchmark_embeddings", "benchmark_task2vec"), b, b) for b in benches]
    # the longest steps of their wave first, so parallel workers finish the wave together
    steps += [Step(("corpus_perplexity",), dg.MultiPartitionKey({"model": m, "corpus": c}), f"{m} x {c}")
              for m in model_ids for c in corpora]
    steps += [Step(MODEL_BENCHMARK_ASSETS, dg.MultiPartitionKey({"model": m, "benchmark": b}), f"{m} x {b}")
              for m in model_ids for b in benches]
    steps += [Step(CORPUS_BENCHMARK_ASSETS, dg.MultiPartitionKey({"corpus": c, "benchmark": b}), f"{c} x {b}")
              for c in corpora for b in benches]
    from simassets.defs.studies import STUDY_ASSETS

    if experiments:
        steps += [Step(("unlearning_runs",), dg.MultiPartitionKey({"model": m, "corpus": c}), f"unlearn {c} from {m}")
                  for m in model_ids for c in corpora]
        steps.append(Step(("attribution_analysis",), None, "attribution"))
        steps += [Step(("finetune_runs",), dg.MultiPartitionKey({"model": m, "corpus": c}), f"finetune {m} on {c}")
                  for m in model_ids for c in corpora]
        steps.append(Step(("alignment_vs_loss",), None, "interventions"))
    steps.append(Step(("measure_registry",), None, "measures"))
    steps += [Step(STUDY_ASSETS, s, f"study {s}") for s in studies]
    if skip:
        steps = [Step(kept, s.partition_key, s.label) for s in steps
                 if (kept := tuple(a for a in s.assets if a not in skip))]
    return steps


def error_text(error) -> str:
    """The message of a step failure's own error (Dagster wraps user errors in its own)."""
    while (error.cls_name or "").startswith("Dagster") and getattr(error, "cause", None) is not None:
        error = error.cause
    lines = [line for line in error.message.strip().splitlines() if line.strip()]
    return lines[-1] if lines else error.cls_name or "failed"


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
                error = error_text(failures[0].event_specific_data.error) if failures else "failed"  # type: ignore[union-attr]
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


def step_levels(steps: Sequence[Step]) -> list[list[Step]]:
    """The steps in waves: every step's upstream assets are produced by steps of earlier waves."""
    deps = {a.key.to_user_string(): {k.to_user_string() for k in a.dependency_keys} for a in all_assets()}
    level_of: dict[str, int] = {}
    waves: list[list[Step]] = []
    for step in steps:
        upstream = {d for a in step.assets for d in deps.get(a, ()) if d not in step.assets}
        level = max((level_of[d] + 1 for d in upstream if d in level_of), default=0)
        for a in step.assets:
            level_of[a] = max(level_of.get(a, -1), level)
        waves.extend([] for _ in range(level + 1 - len(waves)))
        waves[level].append(step)
    return waves


_WORKER: dict = {}


def _worker_init(study_config: dict, threads: int) -> None:
    """Per worker process: thread budget, instance and resources once (models then load once per process)."""
    os.environ["OMP_NUM_THREADS"] = str(threads)
    import torch

    torch.set_num_threads(threads)
    from simassets.defs.resources import StudyResource

    home = Path(study_config["home"]).resolve() if study_config.get("home") else None
    _WORKER.update(instance=get_instance(home), resources={"study": StudyResource(**study_config)})


def _worker_step(step: Step) -> tuple[RunReport, list[str]]:
    lines: list[str] = []
    return execute([step], _WORKER["instance"], _WORKER["resources"], progress=lines.append), lines


def execute_parallel(steps: Sequence[Step], study, workers: int,
                     progress: Callable[[str], None] = print) -> RunReport:
    """Materialize the steps with ``workers`` processes, wave by wave (see :func:`step_levels`).

    Each worker process writes its own runs to the shared Dagster instance and its own Parquet
    partitions (atomic renames), so the result is the same as :func:`execute`; torch threads are
    split between the workers.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    config = {k: getattr(study, k) for k in ("profile", "home", "data_root", "catalog_dir", "on_bad_row")}
    threads = max(1, (os.cpu_count() or 1) // workers)
    report, start, done = RunReport(), time.perf_counter(), 0
    plain = [Step(s.assets, None if s.partition_key is None else str(s.partition_key), s.label) for s in steps]
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_worker_init, initargs=(config, threads)) as pool:
        for wave in step_levels(plain):
            for fut in as_completed([pool.submit(_worker_step, s) for s in wave]):
                part, lines = fut.result()
                done += 1
                report.computed += part.computed
                report.skipped += part.skipped
                report.failed += part.failed
                for line in lines:
                    progress(f"[{done}/{len(plain)}]" + line.split("]", 1)[1])
    report.seconds = time.perf_counter() - start
    return report


def model_benchmark_job() -> dg.JobDefinition:
    """The code location's ``refresh_benchmark_x_model`` job (evaluation + model similarity per model x
    benchmark partition), exactly as the daemon and UI backfills run it: with Dagster's default
    multiprocess executor. Module-level so that :func:`dg.reconstructable` can rebuild it in step processes."""
    from simassets.definitions import defs

    return defs().resolve_job_def("refresh_benchmark_x_model")


def _backfill_run(home: str | None, key: str, max_concurrent_steps: int) -> tuple[bool, str]:
    """One ``refresh_benchmark_x_model`` run for one partition, on the calling process's main thread (a
    worker of :func:`backfill`'s process pool): the multiprocess executor starts a process per step."""
    from simassets.defs.partitions import model_benchmark_partitions

    instance = get_instance(Path(home) if home else None)
    tags = {**model_benchmark_partitions.get_tags_for_partition_key(key), "simassets/runner": "backfill"}
    run_config = {"execution": {"config": {"multiprocess": {"max_concurrent": max_concurrent_steps}}}}
    with dg.execute_job(dg.reconstructable(model_benchmark_job), instance, run_config=run_config,
                        tags=tags) as result:
        failures = [e for e in result.all_events if e.is_step_failure]
        error = error_text(failures[0].event_specific_data.error) if failures else ""  # type: ignore[union-attr]
        return result.success, error


def backfill(partition_keys: Sequence[str], home: Path | None = None, max_concurrent_runs: int = 2,
             max_concurrent_steps: int = 2, progress: Callable[[str], None] = print) -> RunReport:
    """Materialize model x benchmark partitions the way a UI backfill does: one Dagster run per partition,
    each executed out of process by the multiprocess executor (every step in a process of its own), with
    up to ``max_concurrent_runs`` runs side by side.

    ``dg.execute_job`` belongs on a main thread (from worker threads it hangs), so each run is launched
    from a worker of a spawn process pool -- the part a deployment's run launcher plays. Each step process
    loads its model itself, so this trades the in-process runner's shared model for isolation; it exists to
    exercise (and test) exactly the path a deployment takes. ``max_concurrent_runs=1`` runs them in turn.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    keys = [str(k) for k in partition_keys]
    home_arg = str(home) if home else None
    get_instance(home)  # the instance folder exists before the workers race to create it
    report, start = RunReport(), time.perf_counter()
    workers = max(1, min(max_concurrent_runs, len(keys)))
    # spawn, not fork: a forked copy of a process holding Dagster/DuckDB/torch state is unsafe; pool
    # workers are not daemonic, so the multiprocess executor inside them may start step processes
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(_backfill_run, home_arg, key, max_concurrent_steps): key for key in keys}
        for i, fut in enumerate(as_completed(futures), start=1):
            key = futures[fut]
            try:
                ok, error = fut.result()
            except Exception as exc:  # the launching worker itself died: record it, keep the others going
                ok, error = False, f"{type(exc).__name__}: {exc}"
            (report.computed if ok else report.failed).append(key if ok else (key, error or "failed"))  # type: ignore[arg-type]
            progress(f"[{i}/{len(keys)}] {'computed' if ok else 'FAILED  '} refresh_benchmark_x_model[{key}]"
                     + (f": {error}" if error else ""))
    report.seconds = time.perf_counter() - start
    return report
