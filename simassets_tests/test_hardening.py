"""Hardening (issue 18), one test per numbered case: the SQL sandbox and sealed partitions (1), no silent deletions
and full-match names (2), worker pools that survive a lost process (3), first-run races and derived files (4),
messages that name the cause (5). Case 6 (no p-value below the n where a test can reach 0.05) is in test_stats."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import dagster as dg
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from simassets import cli, runner
from simassets.core import prune
from simassets.core.catalog import CatalogError, load_catalog
from simassets.core.models import ModelRegistryError, load_registry
from simassets.core.warehouse import Warehouse, seal_path
from simassets.defs import liveness
from simassets_tests.test_automation import BENCHMARKS, materialized_study, template_study  # noqa: F401 (fixtures)
from simassets_tests.test_faults import _cli

MODEL = "tiny-llama"


def _scores_row(acc: float = 0.4) -> pd.DataFrame:
    return pd.DataFrame([{"model": "m1", "benchmark": "b1", "category": "c", "language": "en", "n": 10, "acc": acc,
                          "acc_stderr": 0.1, "acc_norm": acc, "acc_norm_stderr": 0.1, "primary_metric": "acc",
                          "random_baseline": 0.5, "normalized_score": 0.0, "acc_ci_low": 0.1, "acc_ci_high": 0.7,
                          "acc_norm_ci_low": 0.1, "acc_norm_ci_high": 0.7, "model_fingerprint": "f", "params": "{}"}])


@pytest.fixture()
def home(tmp_path, monkeypatch) -> Path:
    h = tmp_path / "home"
    monkeypatch.setenv("SIMASSETS_HOME", str(h))
    Warehouse(h).write_partition("benchmark_scores", "quick", {"model": "m1", "benchmark": "b1"}, _scores_row(), "fp1")
    return h


# ---------------------------------------------------------------- 1. the SQL sandbox; seals
ESCAPES = [
    "copy (select 1 as x) to '{outside}/stolen.csv'",
    "copy (select * from benchmark_scores) to '{warehouse}/benchmark_scores/quick/model=m1__benchmark=b1.parquet' "
    "(format parquet)",
    "select * from read_text('/etc/passwd')",
    "select * from read_csv('/etc/passwd')",
    "select * from read_blob('{home}/.simassets-key')",
    "select * from glob('/root/*')",
    "select * from read_parquet('{warehouse}/../.simassets-key')",
    "pragma version",
    "set threads = 1",
    "reset enable_external_access",
    "install httpfs",
    "load httpfs",
    "attach '{outside}/other.db' as other",
    "select 1; copy (select 1) to '{outside}/x.csv'",
]


@pytest.mark.parametrize("statement", ESCAPES)
def test_user_sql_reads_only_the_warehouse_and_writes_nothing(statement, home, tmp_path, capsys):
    outside = tmp_path / "outside"
    outside.mkdir()
    wh = Warehouse(home)
    wh.user_query("select 1")  # the first session writes each table's empty schema file (the views need one)
    before = {p: p.read_bytes() for p in home.rglob("*") if p.is_file()}
    query = statement.format(outside=outside, warehouse=wh.root, home=home)
    assert cli.main(["sql", query]) == 2
    err = capsys.readouterr().err
    assert "query failed" in err and "read-only" in err, err
    assert not list(outside.iterdir())
    assert {p: p.read_bytes() for p in home.rglob("*") if p.is_file()} == before
    # reading the warehouse still works, including its files directly
    assert cli.main(["sql", "select acc from benchmark_scores", "--format", "csv"]) == 0
    assert capsys.readouterr().out.split() == ["acc", "0.4"]
    assert cli.main(["sql", f"select count(*) as n from read_parquet('{wh.root}/*/*/*.parquet')"]) == 0


def test_a_file_written_behind_the_warehouse_is_not_trusted(home):
    """The forgery of the issue: a file with the stored fingerprint copied into its metadata (as `COPY ... TO ...
    (KV_METADATA ...)` from any DuckDB session would write it) keeps its rows visible but loses its fingerprint, so
    the next run recomputes it; ``simassets verify`` names it."""
    wh = Warehouse(home)
    keys = {"model": "m1", "benchmark": "b1"}
    path = wh.partition_path("benchmark_scores", "quick", keys)
    assert wh.stored("benchmark_scores", "quick", keys).fingerprint == "fp1" and seal_path(path).exists()
    table = pq.read_table(path)
    forged = table.set_column(table.schema.get_field_index("acc"), table.schema.field("acc"), pa.array([0.95]))
    pq.write_table(forged.replace_schema_metadata(table.schema.metadata), path)
    stored = wh.stored("benchmark_scores", "quick", keys)
    assert stored.fingerprint is None and not stored.sealed
    assert wh.unsealed() == [path]
    assert cli.main(["verify"]) == 1
    # a writer that copies the seal file as well gains nothing: the seal covers the bytes
    assert wh.fingerprint("benchmark_scores", "quick", keys) is None
    # the warehouse's own write seals again; `verify --adopt` seals what the user vouches for
    wh.write_partition("benchmark_scores", "quick", keys, _scores_row(), "fp2")
    assert wh.fingerprint("benchmark_scores", "quick", keys) == "fp2" and cli.main(["verify"]) == 0
    seal_path(path).unlink()
    assert wh.fingerprint("benchmark_scores", "quick", keys) is None
    assert cli.main(["verify", "--adopt"]) == 0 and wh.fingerprint("benchmark_scores", "quick", keys) == "fp2"


def test_a_forged_score_is_recomputed_by_the_next_run(materialized_study, capsys):  # noqa: F811
    wh = Warehouse()
    keys = {"model": MODEL, "benchmark": "arc_easy"}
    path = wh.partition_path("benchmark_scores", "quick", keys)
    honest = pq.read_table(path)
    acc = honest.column("acc").to_pylist()[0]
    forged = honest.set_column(honest.schema.get_field_index("acc"), honest.schema.field("acc"),
                               pa.array([0.95 if acc != 0.95 else 0.05]))
    pq.write_table(forged.replace_schema_metadata(honest.schema.metadata), path)
    assert cli.main(["run", "--profile", "quick"]) == 0
    out = capsys.readouterr().out
    assert "benchmark_evaluation" in out and wh.read_partition("benchmark_scores", "quick", keys)["acc"][0] == acc
    assert wh.unsealed() == []


# ---------------------------------------------------------------- 2. no silent deletions; names
def test_an_entry_that_leaves_the_catalog_keeps_its_rows_until_prune(materialized_study, capsys):  # noqa: F811
    wh = Warehouse()
    gone = "xcopa_et"
    files = wh.partitions_where("benchmark", gone)
    assert files
    total = len(wh.partition_files())
    catalog = Path(os.environ["SIMASSETS_CATALOG_DIR"]) / "catalog.toml"
    text = catalog.read_text()
    start = text.index(f"[benchmarks.{gone}]")
    end = text.find("\n[", start + 1)
    catalog.write_text(text[:start] + (text[end + 1:] if end >= 0 else ""))
    assert gone not in load_catalog().benchmarks
    assert cli.main(["run", "--profile", "quick"]) == 0
    capsys.readouterr()
    assert all(p.exists() for p in files)  # nothing deleted by the run (nor by the sync it did)
    instance = runner.get_instance()
    assert gone not in instance.get_dynamic_partitions("quick__benchmark")  # but it left the UI
    # prune lists them; without a terminal and without --yes it deletes nothing
    found = prune.orphans(wh, cli._declared())
    assert sorted(o.path for o in found) == sorted(files)
    assert cli.main(["prune"]) == 1
    out = capsys.readouterr().out
    assert f"quick: benchmark={gone}: {len(files)} file(s)" in out
    assert all(p.exists() for p in files)
    assert cli.main(["prune", "--yes"]) == 0
    assert not any(p.exists() or seal_path(p).exists() for p in files)
    assert len(wh.partition_files()) == total - len(files)
    assert cli.main(["prune"]) == 0


@pytest.mark.parametrize("bad_id", ["tiny-llama\n", "tiny-llama\t", "tiny\x00llama"])
def test_a_model_id_with_a_control_character_is_refused(bad_id, tmp_path):
    f = tmp_path / "models.toml"
    escaped = bad_id.replace("\n", "\\n").replace("\t", "\\t").replace("\x00", "\\u0000")
    f.write_text(f'[[models]]\nid = "{escaped}"\nkind = "local"\npath = "/x"\n')
    with pytest.raises(ModelRegistryError, match="must match|control character"):
        load_registry(f)


def test_catalog_names_are_full_matches(tmp_path):
    from simassets_tests.conftest import TINY_CATALOG

    f = tmp_path / "catalog.toml"
    f.write_text(TINY_CATALOG.replace("[benchmarks.arc_easy]", '[benchmarks."arc_easy\\n"]'))
    with pytest.raises(CatalogError, match="name must match"):
        load_catalog(f)


# ---------------------------------------------------------------- 3. worker pools that survive a lost process
def _wait_for(marker: Path, proc: subprocess.Popen, seconds: float = 300) -> int:
    deadline = time.time() + seconds
    while not marker.exists() or not marker.read_text().strip():
        assert proc.poll() is None, proc.communicate()[0]
        assert time.time() < deadline, "the run never reached the write"
        time.sleep(0.2)
    pid = int(marker.read_text().split()[0])
    marker.unlink()
    return pid


def _paused_parallel_run(tmp_path: Path) -> tuple[subprocess.Popen, Path]:
    """``simassets run --workers 2`` with one evaluation partition stale; the worker that recomputes it pauses
    just before its write and names itself in the returned marker file."""
    wh = Warehouse()
    keys = {"model": MODEL, "benchmark": "arc_easy"}
    rows = wh.read_partition("benchmark_scores", "quick", keys).drop(columns=["profile", "created_at"])
    wh.write_partition("benchmark_scores", "quick", keys, rows, "stale")
    marker = tmp_path / "paused"
    proc = _cli("run", "--profile", "quick", "--workers", "2",
                env={"SIMASSETS_PAUSE_AT": "replace:benchmark_scores", "SIMASSETS_PAUSE_FILE": str(marker)})
    return proc, marker


def test_a_lost_worker_is_retried_once_then_reported_and_the_run_finishes(materialized_study, tmp_path):  # noqa: F811
    """A worker killed (as the OOM killer would) mid-step: its piece is retried on a fresh worker; killed again,
    the piece is reported failed with the cause, the other work completes, the summary and the views follow, and
    no run is left STARTED."""
    proc, marker = _paused_parallel_run(tmp_path)
    try:
        first = _wait_for(marker, proc)
        assert first != proc.pid
        os.kill(first, signal.SIGKILL)
        second = _wait_for(marker, proc)  # the retry, on a fresh worker, pauses at the same write
        assert second != first
        os.kill(second, signal.SIGKILL)
        out, _ = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, out
    assert "retrying once on a fresh worker" in out and "worker process lost (exit code" in out, out
    assert "exit code -9" in out or "exit code unknown" in out, out  # SIGKILL, when the pool still knew the worker
    assert "FAILED benchmark_evaluation[" in out and "done in" in out and "views" in out, out
    assert "Traceback" not in out, out
    instance = runner.get_instance()
    assert not instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))


def test_workers_exit_with_their_parent_and_its_runs_are_failed_at_the_next_start(materialized_study,  # noqa: F811
                                                                                  tmp_path):
    proc, marker = _paused_parallel_run(tmp_path)
    try:
        worker = _wait_for(marker, proc)
        os.kill(proc.pid, signal.SIGKILL)  # the main process dies; its paused worker must not compute on
        proc.wait(timeout=30)
        deadline = time.time() + 20
        while liveness.alive(worker) and time.time() < deadline:
            time.sleep(0.2)
        assert not liveness.alive(worker), "the orphaned worker kept running"
    finally:
        if proc.poll() is None:
            proc.kill()
    instance = runner.get_instance()
    started = instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))
    assert started  # left behind by the dead worker ...
    held = {s.run_id for s in instance.event_log_storage.get_concurrency_info("model").claimed_slots}
    assert held & {r.run_id for r in started}  # the dead step's pool slot is still claimed ...
    assert sorted(liveness.fail_dead_runs(instance)) == sorted(r.run_id for r in started)  # ... failed at next start
    assert not instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))
    # ... and its slot given back: else the next run's model steps wait for it forever
    assert not instance.event_log_storage.get_concurrency_info("model").claimed_slots


def test_pool_slots_of_finished_runs_are_given_back_and_those_of_going_runs_kept(tmp_path):
    """A run killed inside a pooled step keeps its slot claimed (found after a killed ``simassets run``: the next
    run's steps of that pool waited forever); the slots of runs still going stay claimed."""
    from dagster._core.storage.dagster_run import DagsterRun

    instance = runner.get_instance(tmp_path / "home")
    storage = instance.event_log_storage
    storage.set_concurrency_slots("model", 2)
    dead, alive = (instance.add_run(DagsterRun(job_name="j", run_id=f"{c * 8}-0000-0000-0000-000000000000",
                                               status=dg.DagsterRunStatus.STARTED)) for c in "ab")
    for run in (dead, alive):
        assert storage.claim_concurrency_slot("model", run.run_id, "step").is_claimed
    instance.report_run_failed(dead, message="killed")
    assert liveness.free_slots_of_finished_runs(instance) == [("model", dead.run_id)]
    assert [s.run_id for s in storage.get_concurrency_info("model").claimed_slots] == [alive.run_id]
    assert liveness.free_slots_of_finished_runs(instance) == []


# ---------------------------------------------------------------- 4. first-run races, derived files
def _first_instance(home: str) -> str:
    try:
        runner.get_instance(Path(home)).get_runs(limit=1)
        return "ok"
    except Exception as exc:  # reported back, not raised in the child
        return f"{type(exc).__name__}: {exc}"


def _map_in_children(fn, args: list[str]) -> list[str]:
    """``fn`` over ``args`` in 4 spawned processes. The pool is closed and joined, so every worker leaves on its own
    end-of-work sentinel; ``with Pool()`` terminates it instead, and in one CI run a worker stayed blocked on the
    task queue's lock after the terminate while the pool waited for it to exit, for good."""
    pool = multiprocessing.get_context("spawn").Pool(4)
    try:
        return pool.map(fn, args)
    finally:
        pool.close()
        pool.join()


def test_concurrent_first_runs_initialise_one_instance(tmp_path):
    for round_ in range(2):
        home = tmp_path / f"fresh{round_}"
        assert _map_in_children(_first_instance, [str(home)] * 4) == ["ok"] * 4


def _sql_in_child(home: str) -> str:
    os.environ["SIMASSETS_HOME"] = home
    try:
        return str(Warehouse(Path(home)).user_query("select count(*) as n from benchmark_scores")["n"][0])
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"


def test_many_sql_sessions_at_once_on_a_home_without_the_database(home):
    assert not (home / "simassets.duckdb").exists()
    assert _map_in_children(_sql_in_child, [str(home)] * 8) == ["1"] * 8


def test_a_moved_or_copied_home_queries_its_own_files(home, tmp_path):
    wh = Warehouse(home)
    assert wh.ensure_views() == "views created"
    copy = tmp_path / "copy"
    shutil.copytree(home, copy)
    Warehouse(copy).write_partition("benchmark_scores", "quick", {"model": "m1", "benchmark": "b1"},
                                    _scores_row(0.8), "fp9")
    for where, acc in ((copy, 0.8), (home, 0.4)):
        con = Warehouse(where).connect_readonly()
        try:
            assert con.execute("select acc from benchmark_scores").fetchone() == (acc,)
        finally:
            con.close()
    moved = tmp_path / "moved"
    home.rename(moved)
    con = Warehouse(moved).connect_readonly()
    try:
        assert con.execute("select acc from benchmark_scores").fetchone() == (0.4,)
    finally:
        con.close()


def test_a_damaged_database_file_is_rebuilt_and_kept_aside(home):
    wh = Warehouse(home)
    wh.ensure_views()
    wh.db_path.write_bytes(wh.db_path.read_bytes()[:100])  # truncated
    (home / ".views.json").unlink()
    status = wh.ensure_views()
    assert status.startswith("views created") and "damaged" in status, status
    assert len(list(home.glob("simassets.duckdb.damaged-*"))) == 1
    con = wh.connect_readonly()
    try:
        assert con.execute("select count(*) from benchmark_scores").fetchone() == (1,)
    finally:
        con.close()


# ---------------------------------------------------------------- 5. messages that name the cause
def test_damaged_weights_are_named_and_not_retried(tiny_model_dir, tmp_path):
    from simassets.core import models as m
    from simassets.defs.factory import bad_input_errors

    bad = tmp_path / "bad"
    shutil.copytree(tiny_model_dir, bad)
    weights = next(bad.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:200])
    with pytest.raises(ModelRegistryError, match=f"damaged weights file.*{weights}") as exc:
        m._load(m.ModelSpec(id="bad", kind="local", path=str(bad)), "cpu")
    assert isinstance(exc.value, bad_input_errors())  # a dg.Failure(allow_retries=False): no retry


def test_a_missing_corpus_file_names_the_entry_and_the_path(tiny_study):
    from simassets.core.sampling import source_hashes
    from simassets.core.sampling import SourceError

    catalog = load_catalog()
    corpus = next(iter(catalog.corpora))
    src = catalog.corpora[corpus].source
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SIMASSETS_DATA_ROOT", str(tiny_study / "nowhere"))
        with pytest.raises(SourceError, match=rf"\[corpora\.{corpus}\] source file .*{Path(src.path).name} not found"):
            source_hashes(catalog, corpus)


def test_a_catalog_that_is_not_utf8_names_the_file_and_line(tmp_path, capsys, monkeypatch):
    from simassets_tests.conftest import TINY_CATALOG

    (tmp_path / "catalog.toml").write_bytes(TINY_CATALOG.encode() + b"\n# caf\xe9\n")
    monkeypatch.setenv("SIMASSETS_CATALOG_DIR", str(tmp_path))
    with pytest.raises(CatalogError, match=rf"{tmp_path / 'catalog.toml'}: not UTF-8 text \(byte \d+, line \d+"):
        load_catalog()
    assert cli.main(["run"]) == 2 and "not UTF-8" in capsys.readouterr().err


@pytest.mark.parametrize("field, value", [("benchmark_limit", -3), ("corpus_sample_size", 0), ("embedding_top_k", 0),
                                          ("eval_batch_size", -1)])
def test_catalog_numbers_are_range_checked(field, value, tmp_path):
    import re

    from simassets_tests.conftest import TINY_CATALOG

    text = TINY_CATALOG
    head, body = text.split("[profiles.quick]", 1)
    body = re.sub(rf"(?m)^{field} = .*\n", "", body)
    (tmp_path / "catalog.toml").write_text(f"{head}[profiles.quick]\n{field} = {value}{body}")
    with pytest.raises(CatalogError, match=rf"\[profiles\.quick\] field '{field}' must be >= \d+, got {value}"):
        load_catalog(tmp_path / "catalog.toml")


def test_temporary_files_of_killed_writers_are_swept(home):
    wh = Warehouse(home)
    folder = wh.root / "benchmark_scores" / "quick"
    old, fresh = folder / ".x.parquet.123.abcd.tmp", folder / ".y.parquet.456.ef01.tmp"
    cache_old = home / "cache" / ".emb.npy.1.tmp"
    cache_old.parent.mkdir(parents=True)
    for p in (old, fresh, cache_old):
        p.write_bytes(b"half")
    stale = time.time() - 7 * 3600
    os.utime(old, (stale, stale))
    os.utime(cache_old, (stale, stale))
    assert sorted(wh.sweep_tmp()) == sorted([old, cache_old])
    assert fresh.exists() and not old.exists() and len(wh.partition_files()) == 1


def test_the_thread_budget_holds_blas_and_openmp_pools_loaded_before_and_after_it():
    """Two step processes whose numpy/scipy BLAS each use every core oversubscribe the machine (MAUVE's PCA ran
    4-5x slower side by side): a step's budget must reach the pools already loaded and those loaded later."""
    import sys

    code = (
        "import json, numpy, threadpoolctl\n"
        "from simassets.core import budget\n"
        "before = {i['internal_api']: i['num_threads'] for i in threadpoolctl.threadpool_info()}\n"
        "n = budget.apply_thread_budget()\n"
        "import scipy.linalg, sklearn.cluster  # loaded after the budget: they read the environment\n"
        "after = [(i['internal_api'], i['num_threads']) for i in threadpoolctl.threadpool_info()]\n"
        "print(json.dumps({'n': n, 'before': before, 'after': after, 'cores': budget.cores()}))\n")
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "2", "SIMASSETS_TORCH_THREADS": "1"}
    env.pop("OMP_NUM_THREADS", None)
    out = json.loads(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                                    check=True).stdout.strip().splitlines()[-1])
    assert out["n"] == 1 and out["before"]["openblas"] == min(2, out["cores"])  # OpenBLAS caps at the cores
    assert len(out["after"]) >= 2 and {a for a, _ in out["after"]} >= {"openblas"}
    assert all(threads == 1 for _, threads in out["after"]), out["after"]
