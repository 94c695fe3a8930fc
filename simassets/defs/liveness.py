"""Runs whose process is gone: marked failed, and their pool slots given back.

Neither path has a watcher that would do it otherwise. A killed ``simassets run`` (or one of its workers) leaves its
runs ``STARTED``; so does a UI run when ``dg dev`` is stopped, or the OOM killer takes the run's process: Dagster's
run monitoring cannot tell, because the local run launcher offers no health check. Such a run holds one of the
run queue's slots forever (the next model's runs stay queued) and the pool slot its step claimed. So ``simassets
run``, ``simassets ui`` and every tick of the sync sensor call :func:`fail_dead_runs`.
"""

from __future__ import annotations

import os
import socket

import dagster as dg

from simassets.defs.planning import IN_FLIGHT

PID_TAG, HOST_TAG = "simassets/pid", "simassets/host"
GOING = (*IN_FLIGHT, dg.DagsterRunStatus.CANCELING)  # a canceling run may still hold its slot


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _local_runs(instance: dg.DagsterInstance) -> bool:
    """Whether the instance launches runs as processes of this machine (``dg dev``'s default launcher)."""
    from dagster._core.launcher import DefaultRunLauncher

    return isinstance(instance.run_launcher, DefaultRunLauncher)


def run_pid(instance: dg.DagsterInstance, run: dg.DagsterRun) -> int | None:
    """The process a run executes in, on this machine: the CLI's tags, else the pid its start event records."""
    pid = run.tags.get(PID_TAG)
    if pid is not None:
        return int(pid) if pid.isdigit() and run.tags.get(HOST_TAG) == socket.gethostname() else None
    if not _local_runs(instance):
        return None  # a k8s or Dask deployment's run: its launcher watches it
    starts = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.RUN_START)
    return starts[-1].dagster_event.pid if starts and starts[-1].dagster_event else None


def dead_run_line(run_id: str) -> str:
    """What ``simassets run``, ``simassets ui`` and the sync sensor say about a run :func:`fail_dead_runs` failed."""
    return f"run {run_id} was left STARTED by a process that no longer exists: marked failed"


def fail_dead_runs(instance: dg.DagsterInstance) -> list[str]:
    """Mark failed the runs left ``STARTED`` (or ``STARTING``) by a process of this machine that no longer exists,
    and give back the pool slots of runs no longer going; returns the failed runs' ids. A UI run still starting has
    no start event yet, so no pid: it is left alone."""
    dead = []
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED,
                                                                  dg.DagsterRunStatus.STARTING])):
        pid = run_pid(instance, run)
        if pid is not None and not alive(pid):
            instance.report_run_failed(run, message=f"the process that ran it (pid {pid}) is gone: killed, stopped "
                                                    "with the UI, or out of memory")
            dead.append(run.run_id)
    free_slots_of_finished_runs(instance)
    return dead


def free_slots_of_finished_runs(instance: dg.DagsterInstance) -> list[tuple[str, str]]:
    """Give back the pool slots (and pending claims) of runs that are no longer going: a killed process never
    frees the slot its step held, and without a daemon nothing else does, so the next run's steps of that pool
    would wait for it forever. Returns (pool, run id) per freed claim."""
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return []
    freed, status = [], {}
    for pool in storage.get_concurrency_keys():
        info = storage.get_concurrency_info(pool)
        for run_id in {s.run_id for s in info.claimed_slots} | {s.run_id for s in info.pending_steps}:
            if run_id not in status:
                run = instance.get_run_by_id(run_id)
                status[run_id] = run.status if run else None
            if status[run_id] not in GOING:
                storage.free_concurrency_slots_for_run(run_id)
                freed.append((pool, run_id))
    return freed
