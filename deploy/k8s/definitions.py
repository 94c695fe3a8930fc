"""The simassets code location as deployed on Kubernetes: the same definitions, with every step of a run
executed as its own Kubernetes Job (``dagster-k8s``'s ``k8s_job_executor``) configured by
``executor.yaml`` beside this file (GPU nodes for the steps that load a language model).

Serve it with ``dagster api grpc --python-file deploy/k8s/definitions.py`` (see ``values.yaml``).
"""

from pathlib import Path

import dagster as dg
import yaml
from dagster_k8s import k8s_job_executor

from simassets.definitions import build_defs

EXECUTOR_CONFIG = yaml.safe_load((Path(__file__).with_name("executor.yaml")).read_text())


@dg.definitions
def defs() -> dg.Definitions:
    return build_defs(k8s_job_executor.configured(EXECUTOR_CONFIG))
