"""Automation: a registered model is picked up by the ``catalog_sync`` sensor, which adds its partition and
requests runs for exactly that model's partitions; the study assets then refresh by their automation
condition; removing a model deletes its rows. Dagster's own test tools throughout (no daemon):
``build_sensor_context`` / ``build_schedule_context`` on a real instance, ``evaluate_automation_conditions``.

``materialized_study`` (the tiny study materialized once per session, copied per test) is shared with
``test_faults``.
"""

from __future__ import annotations

import datetime
import functools
import os
import shutil
import time
from pathlib import Path

import dagster as dg
import pytest

from simassets import cli, runner
from simassets.core.models import ModelRegistryError
from simassets.core.warehouse import Warehouse
from simassets.defs.automation import automated_assets, catalog_sync, study_automation
from simassets.defs.resources import StudyResource

MODEL_KEYED_TABLES = ("benchmark_scores", "example_results")
BENCHMARKS = ("arc_easy", "lambada_openai", "xcopa_et")


def _slim_catalog() -> str:
    """The tiny catalog with one corpus and smaller samples: enough for every asset, quick to materialize."""
    from simassets_tests.conftest import TINY_CATALOG

    head, rest = TINY_CATALOG.split("[corpora.pubmed_abstracts]")
    slim = head + rest[rest.index("[benchmarks."):]
    slim = slim.replace("corpus_sample_size = 20\nbenchmark_limit = 10", "corpus_sample_size = 12\nbenchmark_limit = 6")
    assert "pubmed" not in slim and "benchmark_limit = 6" in slim
    return slim + STUDY


STUDY = """
[studies.all]
description = "every benchmark against the corpus (one study, light statistics: the tests time it)"
methods = ["spearman"]
n_boot = 20
n_perm = 20
"""


SLIM_CATALOG = _slim_catalog()


def _build_template(root: str, model_dir: str) -> Path:
    """The tiny study (2 corpora, 3 benchmarks, tiny-llama) materialized by ``simassets run``, once."""
    base = Path(root)
    if (base / "DONE").exists():  # built by this session already (pytest may import this module twice)
        return base
    shutil.rmtree(base, ignore_errors=True)
    (base / "catalog").mkdir(parents=True)
    (base / "catalog" / "catalog.toml").write_text(SLIM_CATALOG)
    (base / "catalog" / "models.toml").write_text(
        f'[[models]]\nid = "tiny-llama"\nkind = "local"\npath = "{model_dir}"\nprofiles = ["quick", "full"]\n')
    with pytest.MonkeyPatch.context() as mp:
        for k, v in {"SIMASSETS_CATALOG_DIR": base / "catalog", "SIMASSETS_HOME": base / "home",
                     "SIMASSETS_PROFILE": "quick", "DAGSTER_HOME": base / "home" / "dagster_home"}.items():
            mp.setenv(k, str(v))
        rc = cli.main(["run", "--profile", "quick"])
    assert rc == 0, "the tiny study must materialize completely"
    (base / "DONE").touch()
    return base


@pytest.fixture(scope="session")
def template_study(tmp_path_factory, tiny_model_dir) -> Path:
    return _build_template(str(tmp_path_factory.getbasetemp() / "materialized_study"), str(tiny_model_dir))


@pytest.fixture()
def materialized_study(template_study, tmp_path, monkeypatch) -> Path:
    """A private copy of the materialized tiny study (warehouse, caches, Dagster instance); returns its home."""
    shutil.copytree(template_study / "catalog", tmp_path / "catalog")
    shutil.copytree(template_study / "home", tmp_path / "home", ignore=shutil.ignore_patterns("simassets.duckdb*", ".views.json"))
    for k, v in {"SIMASSETS_CATALOG_DIR": tmp_path / "catalog", "SIMASSETS_HOME": tmp_path / "home",
                 "SIMASSETS_PROFILE": "quick", "DAGSTER_HOME": tmp_path / "home" / "dagster_home"}.items():
        monkeypatch.setenv(k, str(v))
    Warehouse().ensure_views()
    return tmp_path / "home"


@functools.lru_cache(maxsize=1)
def _repository():
    from simassets.definitions import defs

    return defs().get_repository_def()


def _tick(instance: dg.DagsterInstance):
    """One tick of ``catalog_sync`` as the daemon runs it: run requests resolved against the code location."""
    with dg.build_sensor_context(instance=instance, instance_ref=instance.get_ref(), repository_def=_repository(),
                                 resources={"study": StudyResource()}) as ctx:  # `with`: no instance leaks out
        return catalog_sync.evaluate_tick(ctx)


def _partition_requests(result) -> set[tuple[str, str, str]]:
    out = set()
    for req in result.dynamic_partitions_requests or []:
        kind = "+" if isinstance(req, dg.AddDynamicPartitionsRequest) else "-"
        out |= {(kind, req.partitions_def_name, k) for k in req.partition_keys}
    return out


def _requested(result) -> set[tuple[tuple[str, ...], str | None]]:
    return {(tuple(k.to_user_string() for k in r.asset_selection), r.partition_key) for r in result.run_requests or []}


def _run(instance, request: dg.RunRequest) -> dg.ExecuteInProcessResult:
    """Execute a run request in this process, as the daemon's run launcher would in its own."""
    result = dg.materialize(runner.all_assets(), selection=list(request.asset_selection), partition_key=request.partition_key,
                            instance=instance, resources={"study": StudyResource()}, tags=request.tags, run_config=runner.QUIET)
    assert result.success
    return result


def _materialized_since(instance: dg.DagsterInstance, since: float) -> list[tuple[str, str | None, bool]]:
    """(asset, partition, recomputed?) of every materialization in runs created after ``since`` (the run records)."""
    out = []
    for record in instance.get_run_records():  # (RunsFilter(created_after=...) fails type checks in 1.13.27)
        if record.create_timestamp.timestamp() < since:
            continue
        for rec in instance.get_records_for_run(record.dagster_run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records:
            mat = rec.event_log_entry.asset_materialization
            out.append((mat.asset_key.to_user_string(), mat.partition, "skipped" not in mat.metadata))
    return out


def test_code_location_runs_the_automation_by_default():
    from simassets.definitions import defs

    repo = defs().get_repository_def()
    sync = repo.get_sensor_def("catalog_sync")
    auto = repo.get_sensor_def("study_automation")
    assert sync.default_status == auto.default_status == dg.DefaultSensorStatus.RUNNING
    assert isinstance(auto, dg.AutomationConditionSensorDefinition) and auto is study_automation
    schedules = {s.name: s for s in repo.schedule_defs}
    assert "daily_catalog_sync__benchmark_x_model" in schedules  # the model x benchmark evaluations, daily
    assert all(s.default_status == dg.DefaultScheduleStatus.RUNNING and s.cron_schedule == "0 4 * * *"
               for s in schedules.values())
    # only the study assets automate themselves: corpora, benchmarks, similarity and evaluation never
    # recompute unless the sync asks for a specific partition
    assert "correlations" in automated_assets()
    assert not automated_assets() & {"corpus_documents", "benchmark_examples", "embedding_similarity", "benchmark_evaluation"}


def test_sensor_on_a_fresh_instance_adds_partitions_and_requests_what_is_ready(tiny_study):
    with dg.instance_for_test() as instance:
        result = _tick(instance)
        assert {r for r in _partition_requests(result) if r[1] != "study"} == {
            ("+", "corpus", "c4_en"), ("+", "corpus", "pubmed_abstracts"), ("+", "benchmark", "arc_easy"),
            ("+", "benchmark", "lambada_openai"), ("+", "benchmark", "xcopa_et"), ("+", "model", "tiny-llama")}
        # only the steps whose upstream exists: similarity and evaluation wait for the inputs
        first_wave = runner.step_levels(runner.plan(StudyResource().catalog(), "quick", ["tiny-llama"]))[0]
        assert _requested(result) == {(s.assets, s.partition_key) for s in first_wave}
        assert {key for _, key in _requested(result)} == {"c4_en", "pubmed_abstracts", "arc_easy", "lambada_openai",
                                                          "xcopa_et", None}  # corpora, benchmarks, measure registry
        again = _tick(instance)  # the partitions were not applied (no daemon): the same requests, same run keys
        assert sorted(r.run_key for r in again.run_requests) == sorted(r.run_key for r in result.run_requests)


def test_daily_schedules_sync_partitions_and_request_with_dated_run_keys(tiny_study):
    from simassets.defs.automation import daily_schedules

    with dg.instance_for_test() as instance:
        requests = []
        for schedule in daily_schedules:  # one per partitioning: a schedule launches runs of one job
            with dg.build_schedule_context(instance=instance, instance_ref=instance.get_ref(), repository_def=_repository(),
                                           resources={"study": StudyResource()},
                                           scheduled_execution_time=datetime.datetime(2026, 5, 4, 4, 0, tzinfo=datetime.UTC)) as ctx:
                requests += [(schedule.job_name, r) for r in schedule.evaluate_tick(ctx).run_requests or []]
        assert sorted(instance.get_dynamic_partitions("model")) == ["tiny-llama"]
        assert sorted(instance.get_dynamic_partitions("benchmark")) == ["arc_easy", "lambada_openai", "xcopa_et"]
        assert sorted((job, r.partition_key) for job, r in requests) == [
            ("refresh_benchmark", "arc_easy"), ("refresh_benchmark", "lambada_openai"), ("refresh_benchmark", "xcopa_et"),
            ("refresh_corpus", "c4_en"), ("refresh_corpus", "pubmed_abstracts")]
        assert all(r.run_key.startswith("2026-05-04:") for _, r in requests)


def test_a_registry_edit_that_breaks_it_fails_the_tick_clearly(tiny_study):
    registry = Path(os.environ["SIMASSETS_CATALOG_DIR"]) / "models.toml"
    registry.write_text(registry.read_text() + '\n[[models]]\nid = "org/model|v2"\nkind = "hub"\nhub_id = "org/model"\n')
    with dg.instance_for_test() as instance:
        with pytest.raises(ModelRegistryError, match=r"models.toml: models\[1\].*invalid model id 'org/model\|v2'"):
            _tick(instance)
        assert instance.get_dynamic_partitions("model") == []  # nothing half-applied


@pytest.mark.slow
def test_registering_a_model_runs_only_its_partitions_then_the_study_refreshes(materialized_study, tmp_path):
    from simassets.core.testing import make_tiny_causal_lm

    instance = runner.get_instance()
    assets = runner.all_assets()
    defs = dg.Definitions(assets=assets, resources={"study": StudyResource()})
    baseline = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    assert not _tick(instance).run_requests  # the materialized study is up to date: nothing to request

    since = time.time()
    # a larger model than tiny-llama: the Task2Vec probe (the smallest registered model) stays the same
    tiny2 = make_tiny_causal_lm(tmp_path / "tiny2", seed=1, hidden_size=48)
    assert cli.main(["models", "add", "tiny-2", "--path", str(tiny2)]) == 0
    result = _tick(instance)
    assert _partition_requests(result) == {("+", "model", "tiny-2")}
    requested = _requested(result)
    expected = {(s.assets, str(s.partition_key)) for s in runner.plan(StudyResource().catalog(), "quick", ["tiny-2"])
                if s.partition_key is not None and "tiny-2" in str(s.partition_key).split("|")}
    assert requested == expected and len(expected) >= 3  # its (model x benchmark) partitions and nothing else

    instance.add_dynamic_partitions("model", ["tiny-2"])  # what the daemon does with the sensor's request
    for request in result.run_requests:
        _run(instance, request)
    assert not _tick(instance).run_requests  # nothing left for the sync to do

    # declarative automation: the study assets (and only they) are requested now
    auto = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=baseline.cursor)
    requested_auto = {k.to_user_string() for k in [a.key for a in assets] if auto.get_num_requested(k)}
    assert requested_auto and requested_auto <= automated_assets(), requested_auto
    assert "correlations" in requested_auto
    for name in requested_auto:
        for partition in auto.get_requested_partitions(dg.AssetKey(name)):
            _run(instance, dg.RunRequest(asset_selection=[dg.AssetKey(name)], partition_key=partition))

    # the run records: only tiny-2's partitions and the study assets were computed since the registration
    recomputed = [(a, p) for a, p, fresh in _materialized_since(instance, since) if fresh]
    assert recomputed and all(a in automated_assets() or "tiny-2" in str(p).split("|") for a, p in recomputed), recomputed
    assert {(a, p) for a, p in recomputed if a not in automated_assets()} >= {
        ("benchmark_evaluation", str(dg.MultiPartitionKey({"model": "tiny-2", "benchmark": b})))
        for b in BENCHMARKS}
    wh = Warehouse()
    scores = wh.query("select model, count(*) n from benchmark_scores where profile = 'quick' group by 1 order by 1")
    assert scores.to_dict("records") == [{"model": "tiny-2", "n": 3}, {"model": "tiny-llama", "n": 3}]  # 3 benchmarks
    corr = wh.query("select distinct model from correlations where profile = 'quick' order by 1")
    assert corr["model"].tolist() == ["tiny-2", "tiny-llama"]


def test_removing_a_model_deletes_its_rows_and_requests_the_study(materialized_study):
    instance = runner.get_instance()
    wh = Warehouse()
    docs_before = len(wh.query("select * from corpus_documents"))
    assert len(wh.query("select * from benchmark_scores where model = 'tiny-llama'")) == 3
    assert cli.main(["models", "remove", "tiny-llama"]) == 0
    result = _tick(instance)
    assert _partition_requests(result) == {("-", "model", "tiny-llama")}
    for table in MODEL_KEYED_TABLES:
        assert wh.query(f"select count(*) n from {table}")["n"].iloc[0] == 0, table
    assert not list(wh.root.glob("*/*/*model=tiny-llama*"))  # every table partitioned by model, not just two
    assert len(wh.query("select * from corpus_documents")) == docs_before  # model-independent rows stay
    # the study assets read across every partition: they are asked to recompute (rows were deleted, not updated)
    assert {a for assets, _ in _requested(result) for a in assets} <= automated_assets() and result.run_requests


def test_removing_a_corpus_deletes_its_rows_in_every_table_including_task2vec_diversity(tmp_path):
    """``delete_partitions_where`` also matches tables keyed by (dataset_kind, dataset): a corpus that leaves
    the catalog takes its Task2Vec diversity row with it, and a benchmark of the same name keeps its own."""
    import pandas as pd

    wh = Warehouse(tmp_path)
    for kind, name in (("corpus", "c4 en"), ("benchmark", "c4 en"), ("corpus", "brown")):
        row = pd.DataFrame([{"dataset_kind": kind, "dataset": name, "probe": "p", "value": 0.1, "ci_low": 0.0,
                             "ci_high": 0.2, "n_pairs": 3, "params": "{}"}])
        wh.write_partition("dataset_diversity", "quick", {"dataset_kind": kind, "dataset": name}, row, "fp")
    gone = wh.delete_partitions_where("corpus", "c4 en")
    assert [p.name for p in gone] == ["dataset=c4%20en__dataset_kind=corpus.parquet"]
    left = {p.name for p in (wh.root / "dataset_diversity" / "quick").glob("*.parquet")}
    assert left == {"dataset=c4%20en__dataset_kind=benchmark.parquet", "dataset=brown__dataset_kind=corpus.parquet"}


# ---------------------------------------------------------------- beyond one machine (deploy/)


def test_kubernetes_configuration_validates(monkeypatch):
    """deploy/k8s: the same code location with the Kubernetes step executor; configs pass Dagster's schemas."""
    pytest.importorskip("dagster_k8s")
    import importlib.util

    import yaml
    from dagster._config import process_config
    from dagster._core.instance.config import dagster_instance_config
    from dagster_k8s import K8sRunLauncher, k8s_job_executor

    from simassets.core.paths import REPO_ROOT

    k8s = REPO_ROOT / "deploy" / "k8s"
    spec = importlib.util.spec_from_file_location("simassets_k8s_defs", k8s / "definitions.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    repo = module.defs().get_repository_def()
    assert {job.executor_def.name for job in repo.get_all_jobs()} == {"k8s"}
    assert {s.name for s in repo.sensor_defs} == {"catalog_sync", "study_automation"}  # same automation

    executor = yaml.safe_load((k8s / "executor.yaml").read_text())
    schema = k8s_job_executor.config_schema.config_type
    assert process_config(schema, executor).success
    assert not process_config(schema, {**executor, "max_concurrent": "many"}).success  # the check is real
    gpu = executor["per_step_k8s_config"]["benchmark_evaluation"]
    assert gpu["container_config"]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert set(executor["per_step_k8s_config"]) <= {a.key.to_user_string() for a in runner.all_assets()} | {
        "unlearning_runs", "finetune_runs"}  # step names that exist (the model-loading ones)

    monkeypatch.setenv("DAGSTER_PG_HOST", "db")
    monkeypatch.setenv("DAGSTER_PG_USER", "dagster")
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", "secret")
    instance_cfg = dagster_instance_config(str(k8s), "dagster.yaml")[0]  # validates the instance schema
    assert process_config(K8sRunLauncher.config_type(), instance_cfg["run_launcher"]["config"]).success
    assert yaml.safe_load((k8s / "values.yaml").read_text())["runLauncher"]["type"] == "K8sRunLauncher"


def test_s3_views_sql_covers_every_table_and_parses():
    import duckdb
    import importlib.util

    from simassets.core.paths import REPO_ROOT
    from simassets.core.schema import TABLES

    spec = importlib.util.spec_from_file_location("simassets_s3_views", REPO_ROOT / "deploy" / "s3" / "views.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sql = module.views_sql("s3://bucket/it's here", endpoint="minio:9000")
    statements = duckdb.connect().extract_statements(sql)  # parsed, not run (httpfs would need the network)
    assert len(statements) == 3 + len(TABLES)
    for name in TABLES:
        assert f"VIEW {name} AS SELECT * FROM read_parquet('s3://bucket/it''s here/warehouse/{name}/*/*.parquet'" in sql


def test_a_run_can_be_limited_to_one_study_and_skip_assets(tiny_study):
    catalog = StudyResource().catalog()
    full = runner.plan(catalog, "quick", ["tiny-llama"])
    only = runner.plan(catalog, "quick", ["tiny-llama"], study="multilingual", skip=["corpus_perplexity", "benchmark_task2vec"])
    keys = {str(s.partition_key) for s in only}
    assert {s.label for s in only if s.assets[0] == "correlations"} == {"study multilingual"}
    assert "xcopa_et" in keys and "arc_easy" not in keys and not any("arc_easy" in k for k in keys)
    assert not any("corpus_perplexity" in s.assets or "benchmark_task2vec" in s.assets for s in only)
    assert ("benchmark_examples", "benchmark_embeddings") in {s.assets for s in only}
    assert len(only) < len(full)
    with pytest.raises(ValueError, match="unknown asset"):
        runner.plan(catalog, "quick", ["tiny-llama"], skip=["no_such_asset"])
    from simassets import cli

    assert cli.main(["run", "--study", "no_such_study"]) == 2
