"""Operations: new models and catalog entries refresh themselves; the study assets follow on their own.

* ``catalog_sync_<profile>`` (sensors, every 15 s): keep every profile's dynamic partitions equal to
  ``catalog.toml`` and ``models.toml``, and request runs for this profile's stale partitions whose upstream is
  stored -- one run per unit of work (e.g. all of a new model's evaluations in two runs, one per core), never for
  partitions a queued or running run already covers. ``quick``'s sensor runs by default; ``full``'s is off
  (the full profile takes about an hour of both cores: turn it on in the UI, or use ``simassets run --profile full``).
* ``daily_refresh_<profile>__<partitioning>`` (schedules, 04:00 UTC; quick's on, full's off): the same re-check
  once a day with run keys that carry the date, so partitions whose run failed are tried again.
* ``study_automation`` (automation-condition sensor, on; Dagster's default one is off in OSS): the study assets
  refresh once new upstream partitions have landed.

"Stale" is decided by :mod:`simassets.defs.planning` -- the same code ``simassets run`` plans with.
"""

import dagster as dg

from simassets.core.budget import max_concurrent_runs
from simassets.core.computation import DIMENSIONS
from simassets.defs import factory, liveness, planning
from simassets.defs.resources import StudyResource

# a registered model is seen within seconds; a tick is cheap when nothing changed (_signature), but each one is a
# call into the code server, which competes with the runs for the cores: every 10 s, not every 5
SENSOR_INTERVAL_S = 10
AUTOMATION_INTERVAL_S = 10  # a study starts seconds after its inputs land
DAILY_CRON = "0 4 * * *"
TRIGGER_TAG = "simassets/trigger"
RUNNING_BY_DEFAULT = ("quick",)


def _jobs() -> dict:
    """One asset job per (profile, partitioning): a run covers one partitions definition."""
    jobs = {}
    for profile in factory.PROFILES:
        for part in DIMENSIONS:
            keys = [factory.asset_key(profile, c.name) for c in factory.COMPUTATIONS.values() if c.partitioning == part]
            if keys:
                jobs[(profile, part)] = dg.define_asset_job(
                    planning.job_name(profile, part), selection=dg.AssetSelection.assets(*keys),
                    description=f"Materialize {profile}'s {part or 'unpartitioned'} assets (requested by the sync)")
    return jobs


def _status(profile: str):
    return dg.DefaultSensorStatus.RUNNING if profile in RUNNING_BY_DEFAULT else dg.DefaultSensorStatus.STOPPED


def sync_requests(context, study: StudyResource, profile: str, trigger: str, key_prefix: str = "",
                  partitioning: str | object = ...) -> tuple[list[dg.RunRequest], list[str], int]:
    """Run requests for the profile's stale work (of one partitioning, if given), errors, partitions waiting."""
    scope = study.scope(profile)
    selection = planning.Selection(automated=False)
    order = planning.dynamic_order(context.instance, profile)
    busy = planning.in_flight(context.instance, profile)
    requests, errors, waiting = [], [], 0
    for unit in planning.units(selection, split=False):
        if partitioning is not ... and unit.partitioning != partitioning:
            continue
        plan = planning.plan_unit(unit, scope, selection, order, exclude=busy)
        errors += plan.errors
        waiting += len(plan.waiting)
        for work in plan.work:
            for piece in work.split(_pieces(work), planning.weight_of(work, scope)):
                requests.append(planning.run_request(piece, key_prefix, **{TRIGGER_TAG: trigger}))
    return requests, errors, waiting


def _pieces(work: planning.Work) -> int:
    """Model work is split over the run queue's slots (one run per core, each loading the model once)."""
    comps = [factory.COMPUTATIONS[a] for a in work.assets]
    return max_concurrent_runs() if any(c.pool == "model" for c in comps) else 1


def _signature(context, study: StudyResource) -> str:
    """What a sync depends on, cheaply: the catalog and registry files, the data root's files (stat only) and the
    runs (how many, and which are in flight: a run that starts or ends may change the plan; while runs are going
    their partitions are excluded anyway). Unchanged: the last plan still holds."""
    from simassets.core.hashing import fingerprint

    def stat(p) -> list:
        try:
            st = p.stat()
            return [str(p), st.st_size, st.st_mtime_ns]
        except OSError:
            return [str(p), None]

    files = [study.catalog_path / "catalog.toml", study.catalog_path / "models.toml"]
    data = sorted(p for p in study.data_root_path.rglob("*") if p.is_file()) if study.data_root_path.is_dir() else []
    instance = context.instance
    busy = sorted((r.run_id, r.status.value) for r in instance.get_runs(filters=dg.RunsFilter(
        statuses=list(planning.IN_FLIGHT))))
    return fingerprint([[stat(p) for p in files + data], instance.get_runs_count(), busy])


def _sensor(profile: str, jobs: list) -> dg.SensorDefinition:
    @dg.sensor(name=f"catalog_sync_{profile}", minimum_interval_seconds=SENSOR_INTERVAL_S,
               default_status=_status(profile), jobs=jobs,
               description=f"Sync every profile's partitions with catalog.toml and models.toml; run what is new or "
                           f"stale in profile {profile}.")
    def _sync(context: dg.SensorEvaluationContext, study: StudyResource) -> dg.SensorResult:
        for run_id in liveness.fail_dead_runs(context.instance):  # their run slots go to the queued runs
            context.log.warning(liveness.dead_run_line(run_id))
        signature = _signature(context, study)
        if context.cursor == signature:
            return dg.SensorResult(skip_reason=dg.SkipReason("nothing changed since the last tick"), cursor=signature)
        scopes = [study.scope(p) for p in factory.PROFILES]
        changes = planning.partition_changes(context.instance, scopes)
        partition_requests = []
        for name, (add, remove) in changes.items():
            if add:
                partition_requests.append(dg.AddDynamicPartitionsRequest(name, add))
            if remove:
                partition_requests.append(dg.DeleteDynamicPartitionsRequest(name, remove))
        if changes:  # plan against the partitions as they will be once the requests are applied
            planning.sync_partitions(context.instance, scopes)
        requests, errors, waiting = sync_requests(context, study, profile, f"catalog_sync_{profile}")
        for error in errors:
            context.log.warning(f"cannot plan {error}")
        summary = (f"{len(requests)} run(s) requested, {waiting} partition(s) waiting on upstream"
                   + (f", {len(errors)} error(s)" if errors else ""))
        # the signature is taken before planning: anything that lands meanwhile makes the next tick plan again
        if not requests and not partition_requests:
            return dg.SensorResult(skip_reason=dg.SkipReason(f"up to date: {summary}"), cursor=signature)
        context.log.info("; ".join([f"{n}: " + ", ".join([f"+{k}" for k in a] + [f"-{k}" for k in r])
                                    for n, (a, r) in changes.items()] + [summary]))
        return dg.SensorResult(run_requests=requests, dynamic_partitions_requests=partition_requests, cursor=signature)

    return _sync


def _schedule(profile: str, partitioning: str | None, job) -> dg.ScheduleDefinition:
    @dg.schedule(name=f"daily_refresh_{profile}__{partitioning}", cron_schedule=DAILY_CRON, job=job,
                 default_status=dg.DefaultScheduleStatus.RUNNING if profile in RUNNING_BY_DEFAULT
                 else dg.DefaultScheduleStatus.STOPPED,
                 description=f"Daily re-check of profile {profile}'s {partitioning} partitions: stale or failed ones.")
    def _daily(context: dg.ScheduleEvaluationContext, study: StudyResource):
        changed = planning.sync_partitions(context.instance, [study.scope(p) for p in factory.PROFILES])
        if changed:
            context.log.info(f"partitions synced: {changed}")
        day = context.scheduled_execution_time.strftime("%Y-%m-%d") if context.scheduled_execution_time else "today"
        requests, errors, waiting = sync_requests(context, study, profile, f"daily_refresh_{profile}",
                                                  key_prefix=f"{day}:",
                                                  partitioning=partitioning)
        for error in errors:
            context.log.warning(f"cannot plan {error}")
        return requests or dg.SkipReason(f"no stale {partitioning} partitions; {waiting} waiting on upstream")

    return _daily


factory.load_all()  # every defs module's computations (the modules are autoloaded in any order)
JOBS = _jobs()
_REFRESHED_BY_AUTOMATION = {c.partitioning for c in factory.COMPUTATIONS.values() if c.refresh_after_upstream}
sensors = [_sensor(p, [j for (prof, _), j in JOBS.items() if prof == p]) for p in factory.PROFILES]
schedules = [_schedule(p, part, job) for (p, part), job in JOBS.items()
             if part is not None and part not in _REFRESHED_BY_AUTOMATION]

study_automation = dg.AutomationConditionSensorDefinition(
    "study_automation",
    target=dg.AssetSelection.all(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=AUTOMATION_INTERVAL_S,
    # runs, not a backfill: a backfill's runs wait for the backfill daemon's next pass (every 30 s), which made the
    # studies start half a minute after the last model run had ended
    emit_backfills=False,
    description="Evaluates the assets' automation conditions (the study assets refresh after new scores land).",
)

defs = dg.Definitions(jobs=list(JOBS.values()), sensors=[*sensors, study_automation], schedules=schedules)
