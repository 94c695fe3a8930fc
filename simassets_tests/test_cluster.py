"""The cluster path, running for real on loopback: Postgres as the Dagster instance's storage, a Dask scheduler
whose workers are separate processes connected over TCP, and the warehouse in an S3 bucket served by moto's server
(``make cluster-test``; left out of ``make test``).

Services are started by the project's own scripts and commands (``deploy/local/postgres.sh``, ``dask scheduler``,
``dask worker``, ``moto_server``) and stopped at the end; nothing is left running.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from simassets import runner
from simassets.core.schema import TABLES
from simassets.core.warehouse import Warehouse
from simassets_tests.test_automation import template_study  # noqa: F401 (fixture)
from simassets_tests.test_faults import _assert_same_rows

pytestmark = [pytest.mark.cluster, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[1]
POSTGRES = ROOT / "deploy" / "local" / "postgres.sh"
DASK = Path(sys.executable).with_name("dask")
MOTO = Path(sys.executable).with_name("moto_server")
BUCKET = "simassets-cluster-test"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, proc: subprocess.Popen, what: str, timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} (its log: {proc.args})")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"{what} did not listen on {port} within {timeout} s")


class Cluster:
    """Postgres and a Dask scheduler on loopback, and the Dask workers a test starts for its own study home."""

    def __init__(self, base: Path):
        self.base = base
        self.pg_dir = base / "pg"
        self.pg_port = _free_port()
        self.pg_url = ""
        self.sched_port = _free_port()
        self.procs: list[subprocess.Popen] = []
        self.scheduler: subprocess.Popen | None = None
        self.s3_port = _free_port()
        self.moto: subprocess.Popen | None = None

    def start_postgres(self) -> None:
        out = subprocess.run([str(POSTGRES), "start", str(self.pg_dir), str(self.pg_port)], check=True,
                             stdout=subprocess.PIPE, text=True).stdout
        self.pg_url = out.strip().splitlines()[-1]

    def stop_postgres(self) -> None:
        subprocess.run([str(POSTGRES), "stop", str(self.pg_dir)], check=True)

    def database(self, name: str) -> str:
        """A fresh database on the server; its URL."""
        import psycopg2

        conn = psycopg2.connect(self.pg_url.replace("+psycopg2", "").rsplit("/", 1)[0] + "/postgres")
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'drop database if exists "{name}"')
            cur.execute(f'create database "{name}"')
        conn.close()
        return self.pg_url.rsplit("/", 1)[0] + "/" + name

    def _spawn(self, args: list[str], name: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        """A service process whose output goes to ``<base>/<name>.log`` (an unread pipe would fill and block it)."""
        with open(self.base / f"{name}.log", "ab") as log:
            return subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})

    def start_scheduler(self) -> None:
        self.scheduler = self._spawn(
            [str(DASK), "scheduler", "--host", "127.0.0.1", "--port", str(self.sched_port), "--no-dashboard"],
            "scheduler", {"DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "0"})  # a lost worker fails its task
        _wait_port(self.sched_port, self.scheduler, "dask scheduler")

    def start_moto(self) -> None:
        import boto3

        self.moto = self._spawn([str(MOTO), "-H", "127.0.0.1", "-p", str(self.s3_port)], "moto")
        _wait_port(self.s3_port, self.moto, "moto server")
        boto3.client("s3", **self.boto_args()).create_bucket(Bucket=BUCKET)

    def boto_args(self) -> dict[str, str]:
        return {"endpoint_url": f"http://127.0.0.1:{self.s3_port}", "aws_access_key_id": "test",
                "aws_secret_access_key": "test", "region_name": "us-east-1"}

    def s3_env(self, prefix: str) -> dict[str, str]:
        """The environment that puts a study's warehouse at ``s3://<bucket>/<prefix>``."""
        return {"SIMASSETS_WAREHOUSE": f"s3://{BUCKET}/{prefix}", "AWS_ENDPOINT_URL": f"http://127.0.0.1:{self.s3_port}",
                "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}

    def objects(self, prefix: str) -> list[str]:
        import boto3

        pages = boto3.client("s3", **self.boto_args()).get_paginator("list_objects_v2").paginate(
            Bucket=BUCKET, Prefix=prefix + "/")
        return [o["Key"] for page in pages for o in page.get("Contents", [])]

    @property
    def executor(self) -> str:
        return f"dask://127.0.0.1:{self.sched_port}"

    def start_worker(self, env: dict[str, str], name: str) -> subprocess.Popen:
        """One worker process (no nanny: killing it kills the step it runs), one thread, the study's environment."""
        proc = self._spawn([str(DASK), "worker", f"tcp://127.0.0.1:{self.sched_port}", "--nthreads", "1",
                            "--no-nanny", "--name", name, "--host", "127.0.0.1", "--no-dashboard"], f"worker-{name}", env)
        self.procs.append(proc)
        self.wait_workers(sum(p.poll() is None for p in self.procs))
        return proc

    def wait_workers(self, n: int, timeout: float = 60) -> None:
        from distributed import Client

        with Client(f"tcp://127.0.0.1:{self.sched_port}", timeout=timeout) as client:
            client.wait_for_workers(n, timeout=timeout)

    def stop_workers(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.procs.clear()

    def stop(self) -> None:
        self.stop_workers()
        for proc in (self.scheduler, self.moto):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(20)
        self.stop_postgres()


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    # outside pytest's private (0700) temp root: the server runs as the postgres user when the tests run as root
    base = Path(tempfile.mkdtemp(prefix="simassets-cluster-"))
    base.chmod(0o755)
    c = Cluster(base)
    c.start_postgres()
    try:
        c.start_scheduler()
        c.start_moto()
        yield c
    finally:
        c.stop()
        shutil.rmtree(base, ignore_errors=True)
    assert not (c.pg_dir / "postmaster.pid").exists(), "Postgres left running"
    assert all(p is None or p.poll() is not None for p in (c.scheduler, c.moto)), "a service left running"


def _study_home(template: Path, dest: Path) -> dict[str, str]:
    """A fresh home for the tiny study's catalog: the environment of its CLI runs and of its workers."""
    shutil.copytree(template / "catalog", dest / "catalog")
    return {"SIMASSETS_CATALOG_DIR": str(dest / "catalog"), "SIMASSETS_HOME": str(dest / "home"),
            "SIMASSETS_PROFILE": "quick", "DAGSTER_HOME": str(dest / "home" / "dagster_home"),
            "SIMASSETS_TORCH_THREADS": "1"}


def _run(env: dict[str, str], timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "simassets.cli", "run", "--profile", "quick"], env={**os.environ, **env},
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout)


def _warehouse(home: Path, env: dict[str, str] | None = None) -> Warehouse:
    """The home's warehouse as ``env`` places it (the local default without it)."""
    with pytest.MonkeyPatch.context() as mp:
        for k in ("SIMASSETS_WAREHOUSE", "AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                  "AWS_DEFAULT_REGION"):
            mp.delenv(k, raising=False)
        for k, v in (env or {}).items():
            mp.setenv(k, v)
        return Warehouse(home)


def _run_on_workers(cluster: Cluster, env: dict[str, str], *workers: str) -> None:
    """``simassets run`` of the study with ``workers`` connected (stopped afterwards); it must succeed."""
    for name in workers:
        cluster.start_worker(env, name)
    try:
        done = _run(env)
        assert done.returncode == 0, done.stdout[-4000:]
    finally:
        cluster.stop_workers()


def _all_rows(wh: Warehouse) -> dict[str, pd.DataFrame]:
    """Every row of every table (created_at and timings aside), canonically ordered; the home's own path (in a corpus
    index's folder) reads ``<home>``."""
    out = {}
    for name, table in TABLES.items():
        # wall-clock columns (build_seconds, ...) differ between any two runs
        cols = [c for c, _, _ in table.columns if c != "created_at" and "second" not in c]
        df = wh.query(f"select {', '.join(cols)} from {name}")
        home = str(wh.home)
        for c in cols:
            df[c] = df[c].map(lambda v: v.replace(home, "<home>") if isinstance(v, str) else v)
        keys = [c for c in cols if df[c].map(lambda v: isinstance(v, str | int | float | bool)).all()]
        out[name] = df.sort_values(keys).reset_index(drop=True) if keys else df
    return out


def _instance(env: dict[str, str]) -> dg.DagsterInstance:
    folder = Path(env["DAGSTER_HOME"])
    return dg.DagsterInstance.from_config(str(folder))


def test_the_tiny_study_on_postgres_and_dask_equals_the_local_default(cluster, template_study, tmp_path,  # noqa: F811
                                                                        monkeypatch):
    env = {**_study_home(template_study, tmp_path), runner.POSTGRES_ENV: cluster.database("study"),
           "SIMASSETS_EXECUTOR": cluster.executor, **cluster.s3_env("study")}
    monkeypatch.setenv(runner.POSTGRES_ENV, env[runner.POSTGRES_ENV])
    _run_on_workers(cluster, env, "w1", "w2")
    assert "postgres" in Path(env["DAGSTER_HOME"], "dagster.yaml").read_text()
    # the partitions are objects in the bucket, each with its seal; none is on the local disk
    keys = cluster.objects("study")
    assert sum(k.endswith(".parquet") and "/_schema/" not in k for k in keys) >= 30
    assert sum(k.endswith(".parquet.seal") for k in keys) == sum(k.endswith(".parquet") and "/_schema/" not in k
                                                                   for k in keys)
    assert not (Path(env["SIMASSETS_HOME"]) / "warehouse").exists()
    remote_wh = _warehouse(Path(env["SIMASSETS_HOME"]), env)
    assert remote_wh.glob("benchmark_scores").startswith(f"s3://{BUCKET}/study/")
    assert not remote_wh.unsealed()
    local, remote = _all_rows(_warehouse(template_study / "home")), _all_rows(remote_wh)
    assert sum(len(df) for df in local.values()) > 100
    _assert_same_rows(remote, local)
    # the user's SQL from a fresh shell reads the bucket (DuckDB through the registered S3 filesystem)
    sql = subprocess.run([sys.executable, "-m", "simassets.cli", "sql", "select count(*) as n from benchmark_scores"],
                         env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert sql.returncode == 0 and str(len(local["benchmark_scores"])) in sql.stdout, sql.stdout
    inst = _instance(env)
    runs = inst.get_runs()
    assert runs and all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
    # the steps ran in the Dask workers, not in the CLI's process: their pids are the workers'
    step_pids = {rec.event_log_entry.dagster_event.pid for r in runs
                 for rec in inst.get_records_for_run(r.run_id, of_type=dg.DagsterEventType.STEP_SUCCESS).records}
    assert step_pids and not (step_pids & {os.getpid()})
    inst.dispose()


def test_a_worker_killed_mid_step_leaves_nothing_partial_and_a_rerun_completes(cluster, template_study,  # noqa: F811
                                                                                tmp_path, monkeypatch):
    env = {**_study_home(template_study, tmp_path), runner.POSTGRES_ENV: cluster.database("kill"),
           "SIMASSETS_EXECUTOR": cluster.executor, **cluster.s3_env("kill")}
    monkeypatch.setenv(runner.POSTGRES_ENV, env[runner.POSTGRES_ENV])
    marker = tmp_path / "paused"
    worker = cluster.start_worker({**env, "SIMASSETS_PAUSE_AT": "replace:benchmark_scores",
                                   "SIMASSETS_PAUSE_FILE": str(marker)}, "doomed")
    proc = subprocess.Popen([sys.executable, "-m", "simassets.cli", "run", "--profile", "quick"],
                            env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        end = time.monotonic() + 600
        while not marker.exists() and time.monotonic() < end and proc.poll() is None:
            time.sleep(0.5)
        assert marker.exists(), "the worker never reached the rename of a benchmark_scores partition"
        pid = int(marker.read_text().split()[0])
        assert pid == worker.pid  # the step runs in the worker process
        os.kill(pid, signal.SIGKILL)
        worker.wait(30)
        cluster.start_worker(env, "replacement")  # as a cluster replaces a lost node: the other runs go on
        out, _ = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
        cluster.stop_workers()
    assert proc.returncode != 0, out[-3000:]
    assert "FAILED benchmark_scores" in out or "FAILED benchmark_evaluation" in out, out[-3000:]
    wh = _warehouse(Path(env["SIMASSETS_HOME"]), env)
    # nothing partial in the bucket: every object there is a whole, sealed partition, and the one being written
    # when the worker died is absent (an object PUT is all or nothing)
    stored = wh.partition_files()
    assert stored and not wh.unsealed()
    scores = [p for p in stored if p.parts[-3] == "benchmark_scores"]
    assert len(scores) < 3
    inst = _instance(env)
    failed = inst.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE]))
    assert failed, "the run whose worker was killed must be reported failed"
    inst.dispose()
    # a re-run on a healthy worker completes the study, equal to the local default
    _run_on_workers(cluster, env, "healthy")
    _assert_same_rows(_all_rows(wh), _all_rows(_warehouse(template_study / "home")))
    assert len([p for p in wh.partition_files() if p.parts[-3] == "benchmark_scores"]) == 3


def test_postgres_restarted_between_runs_loses_no_run_history(cluster, template_study, tmp_path,  # noqa: F811
                                                               monkeypatch):
    env = {**_study_home(template_study, tmp_path), runner.POSTGRES_ENV: cluster.database("restart")}
    monkeypatch.setenv(runner.POSTGRES_ENV, env[runner.POSTGRES_ENV])
    first = _run(env)  # in-process executor: Postgres alone is under test here
    assert first.returncode == 0, first.stdout[-4000:]
    inst = _instance(env)
    before = {(r.run_id, r.status) for r in inst.get_runs()}
    events = sum(len(inst.all_logs(r.run_id)) for r in inst.get_runs())
    inst.dispose()
    assert before
    cluster.stop_postgres()
    cluster.start_postgres()
    inst = _instance(env)
    assert {(r.run_id, r.status) for r in inst.get_runs()} == before
    assert sum(len(inst.all_logs(r.run_id)) for r in inst.get_runs()) == events
    inst.dispose()
    second = _run(env)  # the restarted server serves the next run: everything is fresh, nothing recomputed
    assert second.returncode == 0, second.stdout[-4000:]
    assert "0 computed" in second.stdout or "nothing to do" in second.stdout.lower() or "skipped" in second.stdout
