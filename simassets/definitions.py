"""The code location: every definition under ``simassets/defs`` (autoloaded).

Runs execute their steps in the run's own process (``in_process_executor``): a model or a corpus index loaded by
one step serves the next one, and a run pays one process start-up, not one per step. Parallelism comes from the
run queue, which the project's instance limits to the machine's cores (``simassets.core.budget``). A run's console
shows warnings and errors only: every event still goes to the event log the UI reads, and printing each of them
through ``dg dev`` cost the runs beside it a tenth of the machine.
"""

from pathlib import Path

import dagster as dg


def build_defs(executor: dg.ExecutorDefinition = dg.in_process_executor) -> dg.Definitions:
    """The code location with ``executor`` (a deployment swaps it: ``deploy/k8s`` runs each step as a Job)."""
    quiet = dg.colored_console_logger.configured({"log_level": "WARNING"})
    return dg.Definitions.merge(dg.load_from_defs_folder(path_within_project=Path(__file__).parent),
                                dg.Definitions(executor=executor, loggers={"console": quiet}))


@dg.definitions
def defs() -> dg.Definitions:
    return build_defs()
