"""Dagster steps as tasks on an existing Dask cluster: ``$SIMASSETS_EXECUTOR=dask://HOST:PORT``.

dagster-dask's executor (0.29.27) hands Dagster's records (the run, the instance reference, the known state) to
``Client.submit`` as they are; dask >= 2024.11 walks every tuple argument into its task spec, and Dagster's records
forbid iteration, so every run fails before its first step. This executor is dagster-dask's, scheduling the same way
(one task per step, each depending on its upstream steps' tasks; the worker runs the step with dagster-dask's own
``query_on_dask_worker``), with the arguments handed to dask as one pickled blob it does not look into.

A worker lost mid-step (killed, out of memory) fails its task: the scheduler should run with
``distributed.scheduler.allowed-failures = 0`` so that Dask does not run the step again behind Dagster's back; the
run is reported failed and a re-run recomputes what is missing (partitions are written whole or not at all).
"""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from typing import Any

import dagster as dg
from dagster._core.errors import raise_execution_interrupts
from dagster._core.execution.context.system import PlanOrchestrationContext
from dagster._core.execution.plan.plan import ExecutionPlan
from dagster._core.execution.retries import RetryMode
from dagster._utils import iterate_with_context

WORKER_WAIT_S = 120


def _run_step(dependencies: list[Any], blob: bytes) -> list[dg.DagsterEvent]:
    """On the worker: the step's events (``dependencies`` only orders the tasks)."""
    from dagster_dask.executor import query_on_dask_worker

    return list(query_on_dask_worker(dependencies, *pickle.loads(blob)))


class DaskStepExecutor(dg.Executor):
    def __init__(self, address: str):
        self.address = address

    @property
    def retries(self) -> RetryMode:
        return RetryMode.DISABLED

    def execute(self, plan_context: PlanOrchestrationContext, execution_plan: ExecutionPlan
                ) -> Iterator[dg.DagsterEvent]:
        import dask.distributed

        if not plan_context.instance.is_persistent:
            raise dg.DagsterInvariantViolationError("Dask execution requires a persistent Dagster instance")
        instance_ref = plan_context.instance.get_ref()
        futures: dict[str, Any] = {}
        with dask.distributed.Client(self.address, timeout=WORKER_WAIT_S) as client:
            try:  # a cluster without workers would keep the run waiting for ever
                client.wait_for_workers(1, timeout=WORKER_WAIT_S)
            except TimeoutError as exc:
                raise RuntimeError(
                    f"no Dask worker connected to the scheduler at {self.address} within {WORKER_WAIT_S} s") from exc
            for level in execution_plan.get_steps_to_execute_by_level():
                for step in level:
                    deps = [futures[key] for step_input in step.step_inputs for key in step_input.dependency_keys]
                    blob = pickle.dumps((plan_context.reconstructable_job, plan_context.dagster_run,
                                         plan_context.run_config, [step.key], instance_ref, execution_plan.known_state))
                    futures[step.key] = client.submit(_run_step, deps, blob, key=f"{plan_context.job_name}.{step.key}."
                                                      f"{plan_context.run_id}", pure=False)
            done = dask.distributed.as_completed(list(futures.values()), with_results=True)
            for _future, events in iterate_with_context(raise_execution_interrupts, done):
                yield from events


@dg.executor(name="dask", requirements=dg.multiple_process_executor_requirements(),
             config_schema={"address": dg.Field(dg.StringSource, description="tcp://HOST:PORT of the scheduler")})
def dask_step_executor(init_context: dg.InitExecutorContext) -> DaskStepExecutor:
    """Each step a task on the Dask cluster at ``address`` (workers: separate processes, here or elsewhere)."""
    return DaskStepExecutor(init_context.executor_config["address"])
