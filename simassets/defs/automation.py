"""Operations: new models and catalog entries refresh themselves; the study assets follow on their own.

* ``catalog_sync`` (sensor, every minute, RUNNING by default): keeps the ``corpus``/``benchmark``/``model``
  dynamic partitions equal to ``catalog.toml`` and ``models.toml``, deletes the stored rows of entries
  that were removed, and requests one run per partition of the active profile that is missing or stale
  and whose upstream is stored. A newly registered model gets exactly its own partitions (its
  evaluation and model-based measures); model-independent partitions are fresh and are not requested.
* ``daily_catalog_sync__<kind>`` (schedules, 04:00 UTC, RUNNING by default): the same re-check once a
  day, one schedule per kind of partitioning (a Dagster schedule launches runs of a single job), with
  run keys that carry the date so partitions whose run failed are tried again.
* ``study_automation`` (automation-condition sensor, RUNNING by default; Dagster's default one is
  STOPPED in OSS): the study assets (those with an automation condition) refresh once new upstream
  partitions have landed.

Freshness is decided by the same per-asset fingerprint functions ``simassets run`` uses, so the sync
and the headless runner agree on what is stale.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import dagster as dg

from simassets import runner
from simassets.defs.resources import StudyResource

SENSOR_INTERVAL_S = 60
DAILY_CRON = "0 4 * * *"
TRIGGER_TAG, STEP_TAG = "simassets/trigger", "simassets/step"


def automated_assets() -> set[str]:
    """Assets refreshed by their automation condition (the study assets), not by the sync's run requests."""
    return {k.to_user_string() for a in runner.all_assets()
            for k, cond in a.automation_conditions_by_key.items() if cond is not None}


def _partitioning(pdef: dg.PartitionsDefinition | None) -> str:
    if pdef is None:
        return "unpartitioned"
    if isinstance(pdef, dg.MultiPartitionsDefinition):
        return "_x_".join(d.name for d in pdef.partitions_defs)
    return getattr(pdef, "name", None) or type(pdef).__name__


def _refresh_jobs() -> tuple[dict[str, dg.UnresolvedAssetJobDefinition], dict[str, str]]:
    """One asset job per partitioning (a run covers one partition key of one partitions definition),
    and the job of each asset."""
    groups: dict[str, list[dg.AssetKey]] = {}
    for a in runner.all_assets():
        groups.setdefault(_partitioning(a.partitions_def), []).extend(a.keys)
    jobs = {kind: dg.define_asset_job(f"refresh_{kind}", selection=dg.AssetSelection.assets(*keys),
                                      description=f"Materialize {kind} partitions requested by the catalog sync")
            for kind, keys in sorted(groups.items())}
    return jobs, {k.to_user_string(): jobs[kind].name for kind, keys in groups.items() for k in keys}


REFRESH_JOBS, JOB_OF_ASSET = _refresh_jobs()


@dataclass
class RefreshPlan:
    """What a sync should request: steps that are stale and ready, and those waiting on upstream."""

    ready: list[tuple[runner.Step, str]] = field(default_factory=list)  # (step, input fingerprint)
    waiting: list[runner.Step] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    studies: list[runner.Step] = field(default_factory=list)  # steps left to declarative automation


def refresh_plan(study: StudyResource) -> RefreshPlan:
    """The partitioned steps of ``study``'s profile that need a run now (or later, once upstream exists)."""
    from simassets.core.models import models_for_profile

    profile, wh, fns = study.profile_name, study.warehouse(), runner.freshness_functions()
    models = [m.id for m in models_for_profile(study.models(), profile)]
    plan, automated = RefreshPlan(), automated_assets()
    for step in runner.plan(study.catalog(), profile, models):
        if automated & set(step.assets) or not all(a in fns for a in step.assets):
            plan.studies.append(step)
            continue
        try:  # the step from its first stale asset on (the fresh ones before it are not re-run)
            for i, asset in enumerate(step.assets):
                fresh = fns[asset](study, step.partition_key)  # dg.Failure: an upstream is not stored yet
                if not fresh.fresh(wh, None if asset == "measure_registry" else profile):
                    plan.ready.append((runner.Step(step.assets[i:], step.partition_key, step.label), fresh.fingerprint))
                    break
        except dg.Failure:  # an upstream partition is not stored yet
            plan.waiting.append(step)
        except Exception as exc:  # a broken catalog entry or model: report it, keep planning the rest
            plan.errors.append(f"{step.label}: {type(exc).__name__}: {exc}")
    return plan


def _step_id(step: runner.Step) -> str:
    return f"{'+'.join(step.assets)}:{step.partition_key or ''}"


def _active_steps(instance: dg.DagsterInstance) -> set[str]:
    """Steps with a queued or running sync run (not requested again, whatever the run key)."""
    status = dg.DagsterRunStatus
    runs = instance.get_runs(filters=dg.RunsFilter(
        statuses=[status.QUEUED, status.NOT_STARTED, status.STARTING, status.STARTED], tags={TRIGGER_TAG: "catalog_sync"}))
    return {run.tags[STEP_TAG] for run in runs if STEP_TAG in run.tags}


def run_requests(plan: RefreshPlan, instance: dg.DagsterInstance, key_prefix: str = "",
                 job: str | None = None) -> list[dg.RunRequest]:
    """One run per ready step (of ``job`` only, if given); the run key names the step's inputs, so the
    same inputs are never requested twice, and a step with a run in flight is left alone."""
    active = _active_steps(instance)
    return [
        dg.RunRequest(
            job_name=JOB_OF_ASSET[step.assets[0]],
            asset_selection=[dg.AssetKey(a) for a in step.assets],
            partition_key=step.partition_key,
            run_key=f"{key_prefix}{_step_id(step)}:{fp[:16]}",
            tags={TRIGGER_TAG: "catalog_sync", STEP_TAG: _step_id(step)},
        )
        for step, fp in plan.ready
        if _step_id(step) not in active and (job is None or JOB_OF_ASSET[step.assets[0]] == job)
    ]


def _removal_requests(removed: list[str], plan: RefreshPlan, stamp: str) -> list[dg.RunRequest]:
    """After rows were deleted, the study steps (which read across all partitions) must be recomputed:
    deleting rows is no upstream materialization, so their automation condition would not fire."""
    automated = automated_assets()
    return [dg.RunRequest(job_name=JOB_OF_ASSET[step.assets[0]], partition_key=step.partition_key,
                          asset_selection=[dg.AssetKey(a) for a in step.assets if a in automated],
                          run_key=f"{_step_id(step)}:removed:{','.join(removed)}:{stamp}",
                          tags={TRIGGER_TAG: "catalog_sync"})
            for step in plan.studies if automated & set(step.assets)] if removed else []


@dg.sensor(
    name="catalog_sync",
    minimum_interval_seconds=SENSOR_INTERVAL_S,
    default_status=dg.DefaultSensorStatus.RUNNING,
    jobs=list(REFRESH_JOBS.values()),
    description="Sync corpus/benchmark/model partitions with catalog.toml and models.toml; run what is new or stale.",
)
def catalog_sync(context: dg.SensorEvaluationContext, study: StudyResource) -> dg.SensorResult:
    """Partitions follow the catalog and the registry; new ones get runs for exactly their partitions."""
    catalog, registry, wh = study.catalog(), study.models(), study.warehouse()
    changes = runner.partition_changes(context.instance, catalog, registry)
    partition_requests: list = []
    removed = []
    for name, (add, remove) in changes.items():
        if add:
            partition_requests.append(dg.AddDynamicPartitionsRequest(name, add))
        if remove:
            partition_requests.append(dg.DeleteDynamicPartitionsRequest(name, remove))
            for key in remove:
                gone = wh.delete_partitions_where(name, key)
                removed.append(f"{name}={key}")
                context.log.info(f"{name} {key!r} left the catalog/registry: deleted {len(gone)} stored partition(s)")
    plan = refresh_plan(study)
    for error in plan.errors:
        context.log.warning(f"cannot plan {error}")
    requests = run_requests(plan, context.instance) + _removal_requests(removed, plan, str(int(time.time())))
    summary = (f"{len(requests)} run(s) requested, {len(plan.waiting)} partition(s) waiting on upstream"
               + (f", {len(plan.errors)} error(s)" if plan.errors else ""))
    if not requests and not partition_requests:
        return dg.SensorResult(skip_reason=dg.SkipReason(f"up to date: {summary}"))
    context.log.info("; ".join([f"{n}: " + ", ".join([f"+{k}" for k in a] + [f"-{k}" for k in r])
                                for n, (a, r) in changes.items()] + [summary]))
    return dg.SensorResult(run_requests=requests, dynamic_partitions_requests=partition_requests)


def _daily_schedule(job: dg.UnresolvedAssetJobDefinition) -> dg.ScheduleDefinition:
    kind = job.name.removeprefix("refresh_")

    @dg.schedule(name=f"daily_catalog_sync__{kind}", cron_schedule=DAILY_CRON, job=job,
                 default_status=dg.DefaultScheduleStatus.RUNNING,
                 description=f"Daily re-check of the catalog and the registry: stale or failed {kind} partitions.")
    def _schedule(context: dg.ScheduleEvaluationContext, study: StudyResource):
        changed = runner.sync_partitions(context.instance, study.catalog(), study.models(), study.warehouse())
        if changed:
            context.log.info(f"partitions synced: {changed}")
        plan = refresh_plan(study)
        day = context.scheduled_execution_time.strftime("%Y-%m-%d") if context.scheduled_execution_time else "today"
        requests = run_requests(plan, context.instance, key_prefix=f"{day}:", job=job.name)
        return requests or dg.SkipReason(f"no stale {kind} partitions; {len(plan.waiting)} waiting on upstream")

    return _schedule


_STUDY_JOBS = {JOB_OF_ASSET[a] for a in automated_assets()}
daily_schedules = [_daily_schedule(job) for job in REFRESH_JOBS.values() if job.name not in _STUDY_JOBS
                   and job.name != "refresh_unpartitioned"]

study_automation = dg.AutomationConditionSensorDefinition(
    "study_automation",
    target=dg.AssetSelection.all(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    description="Evaluates the assets' automation conditions (the study assets refresh after new scores land).",
)

defs = dg.Definitions(jobs=list(REFRESH_JOBS.values()), sensors=[catalog_sync, study_automation], schedules=daily_schedules)
