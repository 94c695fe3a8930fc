"""Concurrency and faults: parallel and simultaneous runs agree with a serial run and never block on a
reader; a run killed with SIGKILL mid-write loses nothing and the next run completes it; transient
failures are retried a bounded number of times, with progress in the Dagster logs.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import dagster as dg
import duckdb
import pandas as pd
import pytest

from simassets import cli, runner
from simassets.core.schema import TABLES
from simassets.core.warehouse import Warehouse
from simassets_tests.test_automation import BENCHMARKS, materialized_study, template_study  # noqa: F401 (fixtures)

MODEL = "tiny-llama"
pytestmark = pytest.mark.slow


def _model_rows(wh: Warehouse) -> dict[str, pd.DataFrame]:
    """Every row of every table with a ``model`` column (created_at aside), in a canonical order."""
    out = {}
    for name, table in TABLES.items():
        cols = [c for c, _, _ in table.columns if c != "created_at"]
        if "model" in cols:
            df = wh.query(f"select {', '.join(cols)} from {name}")
            out[name] = df.sort_values([c for c in cols if df[c].map(lambda v: isinstance(v, str | int | float | bool)).all()]
                                       ).reset_index(drop=True)
    return out


def _assert_same_rows(a: dict[str, pd.DataFrame], b: dict[str, pd.DataFrame]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        pd.testing.assert_frame_equal(a[name], b[name], check_exact=False, rtol=1e-6, obj=name)


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "simassets.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**os.environ, **(env or {})})


def _forget_model_rows(wh: Warehouse, home) -> None:
    """Delete every model-dependent partition and start from a fresh Dagster instance."""
    gone = wh.delete_partitions_where("model", MODEL)  # every model-dependent partition must be recomputed
    assert len(gone) >= 2 * len(BENCHMARKS)
    for f in (home / "dagster_home").iterdir():  # a fresh instance: the runs create and sync it
        if f.is_dir():
            shutil.rmtree(f)
        elif f.name != "dagster.yaml":
            f.unlink()


def _run_pids(instance) -> set[int]:
    return {rec.event_log_entry.dagster_event.pid for r in instance.get_runs()
            for rec in instance.get_records_for_run(r.run_id, of_type=dg.DagsterEventType.RUN_SUCCESS).records}


def test_parallel_and_simultaneous_runs_match_a_serial_run_while_a_reader_is_open(materialized_study):
    wh = Warehouse()
    serial = _model_rows(wh)
    assert len(serial["benchmark_scores"]) == len(BENCHMARKS)

    reader = duckdb.connect(str(wh.db_path), read_only=True)  # a user's read-only session, held throughout
    try:
        # 1. a run with 2 worker processes, alone: the work is spread over both processes
        _forget_model_rows(wh, materialized_study)
        assert reader.execute("select count(*) from benchmark_scores").fetchone() == (0,)
        parallel = _cli("run", "--profile", "quick", "--workers", "2")
        out = parallel.communicate(timeout=480)[0]
        assert parallel.returncode == 0 and ", 0 failed" in out, out
        instance = runner.get_instance()
        assert all(r.status == dg.DagsterRunStatus.SUCCESS for r in instance.get_runs())
        assert len(_run_pids(instance)) >= 2  # the work really was spread over processes
        _assert_same_rows(_model_rows(wh), serial)

        # 2. two runs at once (the parallel one in a subprocess, a serial one in this process): both succeed
        _forget_model_rows(wh, materialized_study)
        parallel = _cli("run", "--profile", "quick", "--workers", "2")
        assert cli.main(["run", "--profile", "quick"]) == 0
        out = parallel.communicate(timeout=480)[0]
        assert parallel.returncode == 0, out
        assert ", 0 failed" in out and "lock" not in out.replace("locked by another process", ""), out
        assert reader.execute("select count(*) from benchmark_scores").fetchone() == (len(BENCHMARKS),)
    finally:
        reader.close()
    _assert_same_rows(_model_rows(wh), serial)
    instance = runner.get_instance()
    assert instance.get_runs() and all(r.status == dg.DagsterRunStatus.SUCCESS for r in instance.get_runs())
    assert sorted(instance.get_dynamic_partitions("quick_model")) == [MODEL]  # the racing syncs agreed


def _launch(request: dict) -> tuple[bool, int]:
    """A run request executed as the run launcher executes it: the code location's job over the request's
    partition range, in a process of its own (a spawn pool worker here, ``dagster api execute_run`` there)."""
    import dagster as dg

    from simassets import runner

    os.environ["SIMASSETS_TORCH_THREADS"] = "1"
    instance = runner.get_instance()
    job = dg.build_reconstructable_job("simassets.runner", "code_location_job", reconstructable_args=(request["job"],))
    keys = [dg.AssetKey(k) for k in request["assets"]]
    with dg.execute_job(job, instance, run_config=runner.QUIET, tags=request["tags"], asset_selection=keys) as result:
        return result.success, os.getpid()


def test_the_syncs_runs_of_a_new_model_run_side_by_side_and_match_a_serial_run(materialized_study):
    """The UI path: the sync sensor asks for a model's model x benchmark partitions as one range run per core
    (each loads the model once); executed side by side out of process, while a user's read-only SQL session
    stays open: no lock errors, and the same rows as the serial run."""
    from concurrent.futures import ProcessPoolExecutor
    import multiprocessing

    from simassets_tests.test_automation import _tick

    wh = Warehouse()
    serial = _model_rows(wh)
    for table in ("example_results", "benchmark_scores", "example_similarity", "dataset_similarity"):
        for path in (wh.root / table / "quick").glob("*.parquet"):  # evaluation + model similarity: recomputed
            parts = path.stem.split("__")
            if f"model={MODEL}" in parts and any(p.startswith("benchmark=") for p in parts):
                path.unlink()
    instance = runner.get_instance()
    requests = [r for r in _tick(instance).run_requests if r.job_name == "quick__refresh_model_x_benchmark"]
    assert len(requests) == 2 and any("dagster/asset_partition_range_start" in r.tags for r in requests)
    reader = duckdb.connect(str(wh.db_path), read_only=True)
    try:
        assert reader.execute("select count(*) from benchmark_scores").fetchone() == (0,)
        with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
            done = list(pool.map(_launch, [{"job": r.job_name, "tags": dict(r.tags),
                                            "assets": [k.path for k in r.asset_selection]} for r in requests]))
        assert all(ok for ok, _ in done) and len({pid for _, pid in done}) == 2
        assert reader.execute("select count(*) from benchmark_scores").fetchone() == (len(BENCHMARKS),)
    finally:
        reader.close()
    _assert_same_rows(_model_rows(wh), serial)
    runs = [r for r in instance.get_run_records() if r.dagster_run.job_name == "quick__refresh_model_x_benchmark"
            and r.dagster_run.tags.get("simassets/trigger") == "catalog_sync_quick"]
    assert len(runs) == 2 and all(r.dagster_run.status == dg.DagsterRunStatus.SUCCESS for r in runs)
    # one step per asset per run (evaluation, model similarity, contamination gain): the model loaded once for
    # all of the run's partitions
    for r in runs:
        steps = instance.get_records_for_run(r.dagster_run.run_id, of_type=dg.DagsterEventType.STEP_SUCCESS).records
        assert len(steps) == 3
    spans = sorted((r.start_time, r.end_time) for r in runs)
    assert spans[1][0] < spans[0][1], spans  # the two runs overlapped
    assert not _tick(instance).run_requests  # nothing left to do


def test_sigkill_mid_write_loses_nothing_and_the_next_run_completes(materialized_study, tmp_path):
    wh = Warehouse()
    before = _model_rows(wh)
    keys = {"model": MODEL, "benchmark": "arc_easy"}  # pretend its stored scores are stale: the next run rewrites them
    wh.write_partition("benchmark_scores", "quick", keys, wh.read_partition("benchmark_scores", "quick", keys)
                       .drop(columns=["profile", "created_at"]), "stale")
    marker = tmp_path / "paused"
    proc = _cli("run", "--profile", "quick", env={"SIMASSETS_PAUSE_AT": "replace:benchmark_scores",
                                                  "SIMASSETS_PAUSE_FILE": str(marker)})
    try:
        deadline = time.time() + 300
        while not marker.exists():
            assert proc.poll() is None, proc.communicate()[0]
            assert time.time() < deadline, "the run never reached the write"
            time.sleep(0.2)
        os.kill(proc.pid, signal.SIGKILL)  # the new file is complete on disk but not yet renamed into place
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    folder = wh.partition_path("benchmark_scores", "quick", {"model": MODEL, "benchmark": "x"}).parent
    assert list(folder.glob(".*.tmp")), "the kill should have happened mid-write"
    # every stored row is intact, and nothing of the half-done partition is visible
    _assert_same_rows(_model_rows(wh), before)
    assert wh.fingerprint("benchmark_scores", "quick", keys) == "stale"

    assert cli.main(["run", "--profile", "quick"]) == 0  # the next run completes the partition
    assert wh.fingerprint("benchmark_scores", "quick", keys) not in (None, "stale")
    _assert_same_rows(_model_rows(wh), before)


def test_a_transient_failure_is_retried_and_progress_is_logged(materialized_study, monkeypatch):
    import simassets.core.evaluation as evaluation
    from simassets.defs import factory
    from simassets_tests.conftest import materialize

    evaluation_asset = runner.repository().assets_defs_by_key[factory.asset_key("quick", "benchmark_evaluation")]
    policy = evaluation_asset.op.retry_policy
    assert policy is not None and policy.max_retries == 2  # bounded
    real, calls = evaluation.evaluate_benchmark, []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionResetError("worker lost (simulated)")
        return real(*args, **kwargs)

    monkeypatch.setattr(evaluation, "evaluate_benchmark", flaky)
    wh, keys = Warehouse(), {"model": MODEL, "benchmark": "arc_easy"}
    wh.delete_partitions_where("benchmark", "arc_easy")  # its evaluation must run again (examples too)
    instance = runner.get_instance()
    examples = materialize(["benchmark_examples"], "arc_easy", instance)
    assert examples.success
    result = materialize(["benchmark_evaluation"], str(dg.MultiPartitionKey(keys)), instance)
    assert result.success and len(calls) == 2
    assert [e.event_type_value for e in result.all_events].count("STEP_UP_FOR_RETRY") == 1
    messages = [e.user_message for e in instance.all_logs(result.run_id) if e.user_message]
    assert any(f"evaluating {MODEL} on arc_easy" in m for m in messages)
    assert any(f"model {MODEL}:" in m and "parameters, loaded in" in m for m in messages)
    assert any(f"evaluated {MODEL} on arc_easy: 6 examples in" in m for m in messages)
    assert wh.read_partition("benchmark_scores", "quick", keys)["n"].tolist() == [6]


def test_atomic_write_keeps_the_old_file_when_the_writer_fails(tmp_path):
    """The one atomic write every cache and stamp uses: a failing writer leaves the stored file as it was
    and no temporary file behind; a successful one replaces it whole."""
    from simassets.core.paths import atomic_write, atomic_write_text

    target = tmp_path / "sub" / "stamp.json"
    atomic_write_text(target, '{"fingerprint": "old"}')

    def half_then_fail(fh):
        fh.write(b'{"finger')
        raise OSError("disk full (simulated)")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, half_then_fail)
    assert target.read_text() == '{"fingerprint": "old"}'
    assert sorted(p.name for p in target.parent.iterdir()) == ["stamp.json"]
    atomic_write_text(target, '{"fingerprint": "new"}')
    assert target.read_text() == '{"fingerprint": "new"}'
