"""The code location: every definition under ``simassets/defs`` (autoloaded).

Runs execute their steps in the run's own process (``in_process_executor``): a model or a corpus index loaded by
one step serves the next one, and a run pays one process start-up, not one per step. Parallelism comes from the
run queue, which the project's instance limits to the machine's cores (``simassets.core.budget``). A run's console
shows warnings and errors only: every event still goes to the event log the UI reads, and printing each of them
through ``dg dev`` cost the runs beside it a tenth of the machine.
"""

import os
from pathlib import Path

import dagster as dg

EXECUTOR_ENV = "SIMASSETS_EXECUTOR"


def executor_from_env() -> dg.ExecutorDefinition:
    """The executor ``$SIMASSETS_EXECUTOR`` names: unset or ``in_process`` (the default, every step in the run's
    process), or ``dask://HOST:PORT``: each step a task on an existing Dask scheduler's workers, separate processes
    that may live on other machines (they need the same code, catalog, data root, warehouse and
    ``$SIMASSETS_DAGSTER_POSTGRES_URL``; docs/scaling.md shows a loopback one)."""
    spec = os.environ.get(EXECUTOR_ENV, "").strip()
    if spec in ("", "in_process"):
        return dg.in_process_executor
    if spec.startswith("dask://"):
        from simassets.dask_executor import dask_step_executor  # needs the `cluster` extra

        return dask_step_executor.configured({"address": "tcp://" + spec.removeprefix("dask://")}, name="dask")
    raise ValueError(f"${EXECUTOR_ENV}={spec!r}: expected 'in_process' or 'dask://HOST:PORT'")


def build_defs(executor: dg.ExecutorDefinition = dg.in_process_executor) -> dg.Definitions:
    """The code location with ``executor`` (a deployment swaps it: ``deploy/k8s`` runs each step as a Job)."""
    quiet = dg.colored_console_logger.configured({"log_level": "WARNING"})
    return dg.Definitions.merge(dg.load_from_defs_folder(path_within_project=Path(__file__).parent),
                                dg.Definitions(executor=executor, loggers={"console": quiet}))


@dg.definitions
def defs() -> dg.Definitions:
    return build_defs(executor_from_env())
