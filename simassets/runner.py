"""``simassets run``: materialize a profile headless, through the code location's own jobs.

The plan comes from the definitions (:mod:`simassets.defs.planning`): the profile's assets in topological order,
grouped into units (the assets of one partitioning), and each unit's stale partitions cut into work -- a range of
partitions that one run of the unit's job covers, loading a model once. The runs are the same jobs the sync
sensor launches from the UI (``quick__refresh_model_x_benchmark`` ...), executed in this process or in ``workers``
worker processes, each with ``cores // workers`` torch threads. Nothing here is imported by ``simassets.defs``.
"""

from __future__ import annotations

import fcntl
import functools
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg

from simassets.core import budget, paths
from simassets.defs import factory, liveness, planning

QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
DAGSTER_YAML = """\
# Written by simassets (runner.ensure_instance_dir) for this machine: {cores} core(s).
telemetry:
  enabled: false
concurrency:
  runs:
    # runs at once (each loads its model once): one per core, so a new model never stampedes the machine
    max_concurrent_runs: {runs}
  pools:
    # steps of a pool at once across runs ("model": a loaded language model; "cpu_heavy": the embedder)
    default_limit: {runs}
run_queue:
  # a queued run starts within 2 s of a slot freeing (the default checks every 5 s)
  dequeue_interval_seconds: 2
run_monitoring:
  enabled: true
  poll_interval_seconds: 30
"""


POSTGRES_ENV = "SIMASSETS_DAGSTER_POSTGRES_URL"
POSTGRES_YAML = f"""\
storage:
  # runs, event log and schedules in Postgres (${POSTGRES_ENV} is set): concurrent runs and processes on other
  # machines share one instance; the URL stays in the environment, not in this file
  postgres:
    postgres_url:
      env: {POSTGRES_ENV}
"""


def instance_yaml() -> str:
    """The instance settings: SQLite storage in the home by default, Postgres when ``$SIMASSETS_DAGSTER_POSTGRES_URL``
    names a database (``deploy/local/postgres.sh start`` prints one)."""
    text = DAGSTER_YAML.format(cores=budget.cores(), runs=budget.max_concurrent_runs())
    return text + POSTGRES_YAML if os.environ.get(POSTGRES_ENV) else text


def ensure_instance_dir(home: Path | None = None) -> Path:
    """The Dagster instance folder under the warehouse home, with the project's laptop-safe settings (written
    atomically, and again when the machine's budget changed)."""
    d = (home or paths.home()) / "dagster_home"
    d.mkdir(parents=True, exist_ok=True)
    cfg, text = d / "dagster.yaml", instance_yaml()
    if not cfg.exists() or cfg.read_text() != text:
        paths.atomic_write_text(cfg, text)
    return d


def get_instance(home: Path | None = None) -> dg.DagsterInstance:
    """The home's Dagster instance. Its SQLite storages are created under a file lock: two first runs started
    together would otherwise both create the tables ("table runs already exists")."""
    d = ensure_instance_dir(home)
    os.environ["DAGSTER_HOME"] = str(d)
    with open(d / ".init.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        instance = dg.DagsterInstance.get()
        instance.get_runs(limit=1)  # touch every storage while holding the lock: each creates its tables once
        instance.get_dynamic_partitions("simassets_init_probe")
        instance.all_instigator_state()
    return instance


@functools.cache
def definitions() -> dg.Definitions:
    """The code location's definitions, loaded once per process."""
    from simassets.definitions import defs

    return defs()


@functools.cache
def repository() -> dg.RepositoryDefinition:
    return definitions().get_repository_def()


def code_location_job(name: str) -> dg.JobDefinition:
    """A job of the code location (module-level, so that a reconstructable job can be rebuilt from its name)."""
    return repository().get_job(name)


@dataclass
class RunReport:
    computed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    warned: list[tuple[str, str]] = field(default_factory=list)  # (check on asset, what failed): data still stored
    runs: int = 0
    seconds: float = 0.0

    def add(self, other: RunReport) -> None:
        self.computed += other.computed
        self.skipped += other.skipped
        self.failed += other.failed
        self.warned += other.warned
        self.runs += other.runs
        self.seconds += other.seconds


def error_text(error) -> str:
    """The message of a step failure's own error (Dagster wraps user errors in its own)."""
    while (error.cls_name or "").startswith("Dagster") and getattr(error, "cause", None) is not None:
        error = error.cause
    lines = [line for line in error.message.strip().splitlines() if line.strip()]
    return lines[-1] if lines else error.cls_name or "failed"


def _label(asset: str, pk: str | None) -> str:
    return f"{asset}[{pk}]" if pk else asset


def run_work(work: planning.Work, instance: dg.DagsterInstance) -> RunReport:
    """One run of the unit's job over the work's partitions, in this process; per partition what happened."""
    report, start = RunReport(runs=1), time.perf_counter()
    pdef = work.pdef
    pkeys = [factory.partition_key(pdef, k) for k in work.keys] if work.rectangle else [None]
    job = dg.build_reconstructable_job("simassets.runner", "code_location_job",
                                       reconstructable_args=(planning.job_name(work.profile, work.partitioning),))
    tags = {**work.tags(), "simassets/runner": "cli", liveness.PID_TAG: str(os.getpid()),
            liveness.HOST_TAG: socket.gethostname()} | (
        {"dagster/partition": work.partition_key} if work.partition_key else {})
    errors: dict[str, str] = {}
    seen: dict[tuple[str, str | None], bool] = {}
    try:
        with dg.execute_job(job, instance, run_config=QUIET, tags=tags, asset_selection=work.asset_keys) as result:
            for event in result.all_events:
                if event.is_step_failure:
                    errors[event.step_key or ""] = error_text(event.event_specific_data.error)  # type: ignore[union-attr]
                elif event.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION:
                    mat = event.event_specific_data.materialization  # type: ignore[union-attr]
                    seen[(mat.asset_key.path[-1], mat.partition)] = "skipped" in mat.metadata
                elif event.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION:
                    check: Any = event.event_specific_data
                    if not check.passed:
                        failed = check.metadata.get("failed")
                        report.warned.append((f"{check.check_name} on {check.asset_key.path[-1]}",
                                              json.dumps(failed.value if failed is not None else {}, sort_keys=True)))
    except Exception as exc:  # the run could not start (a definition or config error): every partition failed
        errors[""] = f"{type(exc).__name__}: {exc}"
    first_error = next(iter(errors.values()), "not materialized (an upstream step failed)")
    for asset in work.assets:
        step_error = next((e for k, e in errors.items() if k.endswith(asset)), None)
        for pk in pkeys:
            if (asset, pk) in seen:
                (report.skipped if seen[(asset, pk)] else report.computed).append(_label(asset, pk))
            else:
                report.failed.append((_label(asset, pk), step_error or first_error))
    report.seconds = time.perf_counter() - start
    return report


_WORKER: dict = {}


def _exit_with_parent(parent: int) -> None:
    """A worker whose parent died (killed ``simassets run``) exits instead of computing on, orphaned."""
    while True:
        if os.getppid() != parent:
            os._exit(3)
        time.sleep(1.0)


def _worker_init(threads: int, parent: int) -> None:
    """Per worker process: its torch thread budget and the instance (models then load once per process)."""
    os.environ["SIMASSETS_TORCH_THREADS"] = str(threads)
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True, name="parent-watch").start()
    _WORKER["instance"] = get_instance()
    repository()  # the definitions load now, while the main process plans, not in the first piece's time


def _started() -> int:
    return os.getpid()


def _worker_run(work: planning.Work) -> RunReport:
    return run_work(work, _WORKER["instance"])


def _dependents(all_units: list[planning.Unit]) -> list[int]:
    """Per unit, how many units wait for it, directly or through others."""
    below: list[set[int]] = [set() for _ in all_units]
    for i in reversed(range(len(all_units))):  # units come in an order where each follows the units it needs
        for j in all_units[i].needs:
            below[j] |= {i} | below[i]
    return [len(b) for b in below]


def _cost(work: planning.Work, dependents: int = 0) -> tuple[int, int, int]:
    """The order ready pieces start in: first those of units that more units wait for (a unit nothing waits for,
    such as corpus perplexity, fills the gaps the others leave), then model work, then the larger pieces."""
    model = any(factory.COMPUTATIONS[a].pool == "model" for a in work.assets)
    return (-dependents, 0 if model else 1, -work.size * len(work.assets))


def execute(profile: str, selection: planning.Selection, instance: dg.DagsterInstance, workers: int = 1,
            progress: Callable[[str], None] = print, study=None) -> RunReport:
    """Materialize what ``selection`` keeps of ``profile``: each unit's stale partitions as runs of its job (split
    into ``workers`` pieces where that helps), ready as soon as the units it needs are done and started in
    :func:`_cost`'s order when a worker is free, in this process or a pool of ``workers`` processes."""
    import heapq
    import itertools
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
    from concurrent.futures import CancelledError
    from concurrent.futures.process import BrokenProcessPool

    from simassets.defs.resources import StudyResource

    pool = None
    threads_env = os.environ.get("SIMASSETS_TORCH_THREADS")

    def new_pool() -> ProcessPoolExecutor:
        return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_worker_init,
                                   initargs=(max(1, budget.cores() // workers), os.getpid()))

    if workers > 1:
        pool = new_pool()
        for _ in range(workers):  # every worker starts now and imports while this process loads and plans
            pool.submit(_started)
    else:
        os.environ.setdefault("SIMASSETS_TORCH_THREADS", str(budget.cores()))
    try:
        repository()  # the code location (and every computation) is loaded before planning
        all_units = planning.units(selection)
        dependents = _dependents(all_units)
    except BaseException:
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
        raise
    study = study or StudyResource()
    report, start, done_runs = RunReport(), time.perf_counter(), 0
    losses: dict[str, int] = {}  # piece label -> times its worker was lost
    finished: set[int] = set()
    running: dict[int, int] = {}  # unit -> runs ready or in flight
    ready: list[tuple[tuple[int, int, int], int, int, planning.Work]] = []  # a heap: (priority, order, unit, piece)
    order = itertools.count()
    in_flight: dict[Future, tuple[int, planning.Work]] = {}

    def start_ready() -> None:
        for i, unit in enumerate(all_units):
            if i in finished or i in running or not unit.needs <= finished:
                continue
            scope = study.scope(profile)  # fresh: the rows earlier units wrote (a study's inputs) are read anew
            plan = planning.plan_unit(unit, scope, selection, planning.dynamic_order(instance, profile))
            pdef = factory.partitions_def(profile, unit.partitioning)
            for asset, keys in plan.waiting_assets:
                report.failed.append((_label(asset, factory.partition_key(pdef, keys)),
                                      "an upstream partition is not materialized"))
            report.failed.extend((error.split(":", 1)[0], error) for error in plan.errors)
            report.skipped.extend(_label(a, factory.partition_key(pdef, k)) for k in plan.fresh for a in unit.names)
            pieces = [p for w in plan.work for p in w.split(workers, planning.weight_of(w, scope))]
            progress(f"{'+'.join(unit.names)}: " + (f"{len(plan.fresh)} partition(s) unchanged" if plan.fresh else "")
                     + (", " if plan.fresh and pieces else "") + (f"{len(pieces)} run(s)" if pieces else ""))
            if not pieces:
                finished.add(i)
                continue
            running[i] = len(pieces)
            for piece in pieces:
                heapq.heappush(ready, (_cost(piece, dependents[i]), next(order), i, piece))
        dispatch()

    def dispatch() -> None:
        """Start ready pieces in :func:`_cost`'s order while a worker is free. Held here rather than queued in the
        pool, so a piece that became ready later can still go first: the corpus unit (everything waits for it)
        before the benchmark unit, then corpus perplexity (nothing waits for it) while the benchmark unit
        finishes, the small pieces last before a unit that waits for several."""
        while ready and (pool is None or len(in_flight) < workers):
            _, _, i, piece = heapq.heappop(ready)
            submit(i, piece)

    def submit(i: int, piece: planning.Work) -> None:
        future: Future = Future()
        if pool is not None:
            future = pool.submit(_worker_run, piece)
        else:
            future.set_result(run_work(piece, instance))
        in_flight[future] = (i, piece)

    def lost(piece: planning.Work, cause: str) -> RunReport:
        """The report of a piece whose worker was lost twice: every partition failed, with the cause."""
        failed = RunReport(runs=1)
        pdef = piece.pdef
        pkeys = [factory.partition_key(pdef, k) for k in piece.keys] if piece.rectangle else [None]
        failed.failed = [(_label(a, pk), cause) for a in piece.assets for pk in pkeys]
        return failed

    try:
        start_ready()
        while in_flight:
            workers_now = list((getattr(pool, "_processes", None) or {}).values())  # their exit codes, if one dies
            done, _ = wait(list(in_flight), return_when=FIRST_COMPLETED)
            for future in done:
                i, piece = in_flight.pop(future)
                try:
                    part = future.result()
                except (BrokenProcessPool, CancelledError) as exc:  # a worker died (OOM killer, kill -9), or its
                    # pool did and took this pending piece with it: the piece never ran to the end
                    codes = sorted({p.exitcode for p in workers_now if p.exitcode})
                    cause = (f"worker process lost (exit code {', '.join(map(str, codes)) or 'unknown'}; "
                             f"killed, or out of memory): {exc}")
                    for dead in liveness.fail_dead_runs(instance):
                        progress(f"    run {dead} of the lost worker marked failed")
                    if pool is not None and getattr(pool, "_broken", False):
                        pool.shutdown(wait=False, cancel_futures=True)
                        pool = new_pool()
                    losses[piece.label] = losses.get(piece.label, 0) + 1
                    if losses[piece.label] == 1:
                        progress(f"    {piece.label}: {cause}; retrying once on a fresh worker")
                        submit(i, piece)
                        continue
                    part = lost(piece, cause)
                except Exception as exc:  # anything else the worker raised: this piece failed, the run goes on
                    part = lost(piece, f"{type(exc).__name__}: {exc}")
                done_runs += 1
                report.add(part)
                progress(f"[run {done_runs}] {piece.label}: {len(part.computed)} computed, "
                         f"{len(part.skipped)} skipped, {len(part.failed)} failed ({part.seconds:.1f}s)")
                for label, error in part.failed[:3]:
                    progress(f"    FAILED {label}: {error}")
                for label, failed in part.warned:
                    progress(f"    CHECK {label} did not pass: {failed[:300]}")
                running[i] -= 1
                if not running[i]:
                    del running[i]
                    finished.add(i)
            start_ready()  # what the finished units unblocked (in this process: runs there and then)
    finally:
        if pool is not None:
            pool.shutdown()
        elif threads_env is None:
            os.environ.pop("SIMASSETS_TORCH_THREADS", None)
        if losses:  # the runs of the workers the broken pool took down with it
            liveness.fail_dead_runs(instance)
    report.seconds = time.perf_counter() - start
    return report


def sync(instance: dg.DagsterInstance, study=None) -> dict[str, list[str]]:
    """Every profile's dynamic partitions, made equal to the catalog and the registry."""
    from simassets.defs.resources import StudyResource

    study = study or StudyResource()
    return planning.sync_partitions(instance, [study.scope(p) for p in factory.PROFILES])


def plan_summary(profile: str, selection: planning.Selection) -> list[str]:
    """The units of the plan (for the CLI's opening line)."""
    repository()
    return ["+".join(u.names) for u in planning.units(selection)]


def selection_for(study: str | None = None, models: Sequence[str] | None = None, skip: Sequence[str] = (),
                  experiments: bool = False) -> planning.Selection:
    return planning.Selection(experiments=experiments, study=study, models=tuple(models) if models else None,
                              skip=tuple(skip))
