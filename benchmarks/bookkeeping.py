"""Per-step Dagster bookkeeping on the SQLite instance against the Postgres instance, the same steps, one run.

A step that does no work is timed end to end (run created, events written, materialization recorded, run ended),
so what is measured is the instance's bookkeeping alone. Both instances get the project's own ``dagster.yaml``
(:func:`simassets.runner.instance_yaml`, Postgres added when ``$SIMASSETS_DAGSTER_POSTGRES_URL`` is set); the
steps alternate between them so that the machine's noise falls on both. Postgres is started on 127.0.0.1 by
``deploy/local/postgres.sh`` in a temporary folder and stopped at the end, unless ``--postgres-url`` names one.

    .venv/bin/python benchmarks/bookkeeping.py [--steps 40] [--postgres-url postgresql://...]
"""

import argparse
import os
import socket
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import dagster as dg

from simassets import runner

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "deploy" / "local" / "postgres.sh"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def instance_in(folder: Path, postgres_url: str | None) -> dg.DagsterInstance:
    """An instance from the project's dagster.yaml, with or without Postgres."""
    folder.mkdir(parents=True, exist_ok=True)
    if postgres_url:
        os.environ[runner.POSTGRES_ENV] = postgres_url
    else:
        os.environ.pop(runner.POSTGRES_ENV, None)
    (folder / "dagster.yaml").write_text(runner.instance_yaml())
    return dg.DagsterInstance.from_config(str(folder))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=40, help="steps per instance (one partition each)")
    ap.add_argument("--postgres-url", default=None, help="an existing database (default: start a throwaway one)")
    args = ap.parse_args()
    keys = [f"p{i:03d}" for i in range(args.steps)]

    @dg.asset(partitions_def=dg.StaticPartitionsDefinition(keys))
    def noop(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        """Does nothing: its run is pure bookkeeping."""
        return dg.MaterializeResult(metadata={"partition": context.partition_key}, data_version=dg.DataVersion("1"))

    with tempfile.TemporaryDirectory(prefix="simassets-bookkeeping-") as tmp:
        tmp_path = Path(tmp)
        tmp_path.chmod(0o755)  # the server runs as the postgres user when started by root
        url, started = args.postgres_url, None
        if url is None:
            started = tmp_path / "pg"
            url = subprocess.run([str(SCRIPT), "start", str(started), str(free_port())], check=True,
                                 stdout=subprocess.PIPE, text=True).stdout.strip().splitlines()[-1]
        try:
            instances = {"sqlite": instance_in(tmp_path / "sqlite", None),
                         "postgres": instance_in(tmp_path / "postgres", url)}
            times: dict[str, list[float]] = {name: [] for name in instances}
            for name, inst in instances.items():  # a first run each creates the tables; not timed
                dg.materialize([noop], instance=inst, partition_key=keys[0], run_config=runner.QUIET)
            for i, key in enumerate(keys):
                order = list(instances) if i % 2 == 0 else list(instances)[::-1]
                for name in order:
                    t0 = time.perf_counter()
                    res = dg.materialize([noop], instance=instances[name], partition_key=key,
                                         run_config=runner.QUIET)
                    times[name].append(time.perf_counter() - t0)
                    assert res.success
            for name, inst in instances.items():
                n = len(inst.get_runs())
                assert n == args.steps + 1, f"{name}: {n} runs recorded"
                inst.dispose()
        finally:
            if started is not None:
                subprocess.run([str(SCRIPT), "stop", str(started)], check=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"{args.steps} no-op steps per instance, one run each, in-process executor, alternating")
    print(f"{'instance':<10} {'median s/step':>14} {'mean s/step':>12} {'p90 s/step':>11}")
    for name, v in times.items():
        p90 = sorted(v)[int(0.9 * (len(v) - 1))]
        print(f"{name:<10} {med[name]:>14.3f} {statistics.fmean(v):>12.3f} {p90:>11.3f}")
    print(f"ratio postgres / sqlite (median): {med['postgres'] / med['sqlite']:.2f}")


if __name__ == "__main__":
    main()
