"""Automation: a registered model is picked up by the ``catalog_sync`` sensor, which adds its partition and
requests runs for exactly that model's partitions; the study assets then refresh by their automation
condition; removing a model keeps its rows until ``simassets prune`` (test_hardening). Dagster's own test
tools throughout (no daemon): ``build_sensor_context`` / ``build_schedule_context`` on a real instance,
``evaluate_automation_conditions``.

``materialized_study`` (the tiny study materialized once per session, copied per test) is shared with
``test_faults``.
"""

from __future__ import annotations

import datetime
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import dagster as dg
import pytest

from simassets import cli, runner
from simassets.core.models import ModelRegistryError
from simassets.core.warehouse import Warehouse
from simassets.defs import factory, planning
from simassets.defs.automation import study_automation
from simassets.defs.resources import StudyResource
from simassets_tests.conftest import add_partitions, materialize

RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"

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


def _repository():
    return runner.repository()


def _sensor(profile: str = "quick"):
    return _repository().get_sensor_def(f"catalog_sync_{profile}")


def _tick(instance: dg.DagsterInstance, profile: str = "quick"):
    """One tick of a profile's sync sensor as the daemon runs it: run requests resolved against the code location."""
    with dg.build_sensor_context(instance=instance, instance_ref=instance.get_ref(), repository_def=_repository(),
                                 resources={"study": StudyResource()}) as ctx:  # `with`: no instance leaks out
        return _sensor(profile).evaluate_tick(ctx)


def _partition_requests(result) -> set[tuple[str, str, str]]:
    out = set()
    for req in result.dynamic_partitions_requests or []:
        kind = "+" if isinstance(req, dg.AddDynamicPartitionsRequest) else "-"
        out |= {(kind, req.partitions_def_name, k) for k in req.partition_keys}
    return out


def _covered(request: dg.RunRequest, instance) -> set[tuple[str, str | None]]:
    """(asset, partition key) pairs a run request covers (a single partition or a partition range)."""
    from simassets.defs import planning

    names = [k.path[-1] for k in request.asset_selection]
    start, end = request.tags.get(RANGE_START), request.tags.get(RANGE_END)
    if start:
        keys = planning.range_keys("quick", factory.COMPUTATIONS[names[0]].partitioning, start, end,
                                   planning.dynamic_order(instance, "quick"))
    else:
        keys = [request.partition_key]
    return {(n, k) for n in names for k in keys}


def _requested(result, instance) -> set[tuple[str, str | None]]:
    return set().union(*(_covered(r, instance) for r in result.run_requests or [])) if result.run_requests else set()


def _run(instance, request: dg.RunRequest) -> None:
    """Execute a run request as the daemon's run launcher does: the code location's job, in its own process
    (here: this one), over the request's partition or range."""
    job = dg.build_reconstructable_job("simassets.runner", "code_location_job", reconstructable_args=(request.job_name,))
    tags = {**request.tags, **({"dagster/partition": request.partition_key} if request.partition_key else {})}
    with dg.execute_job(job, instance, run_config=runner.QUIET, tags=tags, asset_selection=request.asset_selection) as res:
        assert res.success


def _materialized_since(instance: dg.DagsterInstance, since: float) -> list[tuple[str, str | None, bool]]:
    """(asset, partition, recomputed?) of every materialization in runs created after ``since`` (the run records)."""
    out = []
    for record in instance.get_run_records():  # (RunsFilter(created_after=...) fails type checks in 1.13.27)
        if record.create_timestamp.timestamp() < since:
            continue
        for rec in instance.get_records_for_run(record.dagster_run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records:
            mat = rec.event_log_entry.asset_materialization
            out.append((mat.asset_key.path[-1], mat.partition, "skipped" not in mat.metadata))
    return out


def _automated() -> set[str]:
    return {c.name for c in factory.COMPUTATIONS.values() if c.refresh_after_upstream}


def test_code_location_runs_the_automation_by_default():
    repo = _repository()
    quick, full = repo.get_sensor_def("catalog_sync_quick"), repo.get_sensor_def("catalog_sync_full")
    auto = repo.get_sensor_def("study_automation")
    assert quick.default_status == auto.default_status == dg.DefaultSensorStatus.RUNNING
    assert full.default_status == dg.DefaultSensorStatus.STOPPED  # the full profile takes an hour: opt in
    assert isinstance(auto, dg.AutomationConditionSensorDefinition) and auto is study_automation
    assert not auto.emit_backfills  # its runs start at the tick, not at the backfill daemon's next pass
    schedules = {s.name: s for s in repo.schedule_defs}
    assert schedules["daily_refresh_quick__model_x_benchmark"].default_status == dg.DefaultScheduleStatus.RUNNING
    assert schedules["daily_refresh_full__model_x_benchmark"].default_status == dg.DefaultScheduleStatus.STOPPED
    assert all(s.cron_schedule == "0 4 * * *" for s in schedules.values())
    # only the study assets automate themselves: corpora, benchmarks, similarity and evaluation never
    # recompute unless the sync asks for a specific partition
    assert "correlations" in _automated()
    assert not _automated() & {"corpus_documents", "benchmark_examples", "embedding_similarity", "benchmark_evaluation"}
    # every run executes its steps in its own process: a model loads once per run
    assert {j.executor_def.name for j in repo.get_all_jobs()} == {"in_process"}


def test_each_profile_is_its_own_world(tiny_study):
    """Keys, groups and partitions are per profile: quick's assets never see full's partitions."""
    repo = _repository()
    quick = repo.assets_defs_by_key[factory.asset_key("quick", "benchmark_examples")]
    full = repo.assets_defs_by_key[factory.asset_key("full", "benchmark_examples")]
    assert quick.partitions_def.name == "quick_benchmark" and full.partitions_def.name == "full_benchmark"
    assert quick.group_names_by_key[quick.key] == "quick_inputs"
    deps = repo.assets_defs_by_key[factory.asset_key("quick", "benchmark_evaluation")].dependency_keys
    assert deps == {factory.asset_key("quick", "benchmark_examples")}
    with dg.instance_for_test() as instance:
        _tick(instance)
        # the full profile's benchmarks (here the tiny catalog's; a full-only one in the real catalog) are its own
        assert instance.get_dynamic_partitions("quick_benchmark") == ["arc_easy", "lambada_openai", "xcopa_et"]
        assert instance.get_dynamic_partitions("full_model") == ["tiny-llama"]


def test_a_partition_of_another_profile_is_refused_and_writes_nothing(tiny_study):
    """A benchmark that only the full profile has cannot be materialized into the quick profile: Dagster does not
    offer it (not a quick partition), and an asset asked anyway refuses, naming the profile it belongs to."""
    catalog = Path(os.environ["SIMASSETS_CATALOG_DIR"]) / "catalog.toml"
    text = catalog.read_text().replace('category = "world_knowledge"\n',
                                       'category = "world_knowledge"\nprofiles = ["full"]\n', 1)
    catalog.write_text(text)  # arc_easy: full only
    wh = Warehouse()
    with dg.instance_for_test() as instance:
        _tick(instance)
        assert "arc_easy" not in instance.get_dynamic_partitions("quick_benchmark")
        assert "arc_easy" in instance.get_dynamic_partitions("full_benchmark")
        with pytest.raises(Exception, match="arc_easy"):  # Dagster: not a partition of quick/benchmark_examples
            materialize(["benchmark_examples"], "arc_easy", instance, raise_on_error=True)
        add_partitions(instance, benchmark=["arc_easy"])  # forced in by hand: the asset itself refuses
        result = materialize(["benchmark_examples"], "arc_easy", instance)
        assert not result.success
        failure = next(e for e in result.all_events if e.is_step_failure)
        message = runner.error_text(failure.event_specific_data.error)
        assert "benchmark 'arc_easy' is not in profile 'quick'" in message and "belongs to profile full" in message
        assert not [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    assert not list(wh.root.glob("*/quick/*arc_easy*")) and not list(wh.root.glob("*/full/*"))


def test_sensor_on_a_fresh_instance_adds_partitions_and_requests_what_is_ready(tiny_study):
    with dg.instance_for_test() as instance:
        result = _tick(instance)
        assert {r for r in _partition_requests(result) if r[1].startswith("quick_") and r[1] != "quick_study"} == {
            ("+", "quick_corpus", "c4_en"), ("+", "quick_corpus", "pubmed_abstracts"), ("+", "quick_benchmark", "arc_easy"),
            ("+", "quick_benchmark", "lambada_openai"), ("+", "quick_benchmark", "xcopa_et"),
            ("+", "quick_model", "tiny-llama")}
        assert {r[1] for r in _partition_requests(result)} >= {"full_corpus", "full_benchmark", "full_model"}
        # only the units whose upstream exists: similarity and evaluation wait for the inputs. One run per unit:
        # corpora (a range), benchmarks (a range) and the measure registry
        requested = _requested(result, instance)
        assert {a for a, _ in requested} == {"corpus_documents", "corpus_index", "corpus_embeddings", "corpus_task2vec",
                                             "benchmark_examples", "benchmark_embeddings", "benchmark_task2vec",
                                             "measure_registry"}
        assert {k for _, k in requested} == {"c4_en", "pubmed_abstracts", "arc_easy", "lambada_openai", "xcopa_et", None}
        # a unit with a model step (Task2Vec) is spread over the run queue's slots; the registry is one run
        from simassets.core.budget import max_concurrent_runs

        by_job = {}
        for r in result.run_requests:
            by_job[r.job_name] = by_job.get(r.job_name, 0) + 1
        n = max_concurrent_runs()
        assert by_job == {"quick__refresh_corpus": min(n, 2), "quick__refresh_benchmark": min(n, 3),
                          "quick__refresh_unpartitioned": 1}
        again = _tick(instance)  # nothing ran: the same requests, same run keys
        assert sorted(r.run_key for r in again.run_requests) == sorted(r.run_key for r in result.run_requests)


def test_daily_schedules_sync_partitions_and_request_with_dated_run_keys(tiny_study):
    with dg.instance_for_test() as instance:
        requests = []
        for schedule in _repository().schedule_defs:  # one per partitioning: a schedule launches runs of one job
            if not schedule.name.startswith("daily_refresh_quick"):
                continue
            with dg.build_schedule_context(instance=instance, instance_ref=instance.get_ref(), repository_def=_repository(),
                                           resources={"study": StudyResource()},
                                           scheduled_execution_time=datetime.datetime(2026, 5, 4, 4, 0, tzinfo=datetime.UTC)) as ctx:
                requests += [(schedule.job_name, r) for r in schedule.evaluate_tick(ctx).run_requests or []]
        assert instance.get_dynamic_partitions("quick_model") == ["tiny-llama"]
        assert instance.get_dynamic_partitions("quick_benchmark") == ["arc_easy", "lambada_openai", "xcopa_et"]
        assert {job for job, _ in requests} == {"quick__refresh_benchmark", "quick__refresh_corpus"}  # what is ready
        assert all(r.run_key.startswith("2026-05-04:") for _, r in requests)


def test_a_registry_edit_that_breaks_it_fails_the_tick_clearly(tiny_study):
    registry = Path(os.environ["SIMASSETS_CATALOG_DIR"]) / "models.toml"
    registry.write_text(registry.read_text() + '\n[[models]]\nid = "org/model|v2"\nkind = "hub"\nhub_id = "org/model"\n')
    with dg.instance_for_test() as instance:
        with pytest.raises(ModelRegistryError, match=r"models.toml: models\[1\].*invalid model id 'org/model\|v2'"):
            _tick(instance)
        assert instance.get_dynamic_partitions("quick_model") == []  # nothing half-applied


@pytest.mark.slow
def test_registering_a_model_runs_only_its_partitions_then_the_study_refreshes(materialized_study, tmp_path):
    from simassets.core.testing import make_tiny_causal_lm

    instance = runner.get_instance()
    quick = [a for a in runner.definitions().assets or () if a.key.path[0] == "quick"]
    defs = dg.Definitions(assets=quick, resources={"study": StudyResource()})
    baseline = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    assert not _tick(instance).run_requests  # the materialized study is up to date: nothing to request

    since = time.time()
    # a larger model than tiny-llama: the Task2Vec probe (the smallest registered model) stays the same
    tiny2 = make_tiny_causal_lm(tmp_path / "tiny2", seed=1, hidden_size=48)
    assert cli.main(["models", "add", "tiny-2", "--path", str(tiny2)]) == 0
    result = _tick(instance)
    assert {r for r in _partition_requests(result) if r[1].startswith("quick")} == {("+", "quick_model", "tiny-2")}
    requested = _requested(result, instance)
    mb = lambda b: str(dg.MultiPartitionKey({"model": "tiny-2", "benchmark": b}))  # noqa: E731
    mc = lambda c: str(dg.MultiPartitionKey({"model": "tiny-2", "corpus": c}))  # noqa: E731
    assert requested == ({(a, mb(b)) for a in ("benchmark_evaluation", "model_similarity", "contamination_gain")
                          for b in BENCHMARKS}
                         | {("corpus_perplexity", mc("c4_en"))})  # its partitions and nothing else
    # a model's evaluations go in as few runs as the run queue has slots (each loads the model once)
    from simassets.core.budget import max_concurrent_runs

    evaluation_runs = [r for r in result.run_requests if r.job_name == "quick__refresh_model_x_benchmark"]
    assert len(evaluation_runs) == min(max_concurrent_runs(), len(BENCHMARKS))
    for request in result.run_requests:
        _run(instance, request)
    assert not _tick(instance).run_requests  # nothing left for the sync to do

    # declarative automation: the study assets (and only they) are requested now
    auto = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=baseline.cursor)
    requested_auto = {a.key.path[-1] for a in quick if auto.get_num_requested(a.key)}
    assert requested_auto and requested_auto <= _automated(), requested_auto
    assert "correlations" in requested_auto
    for name in requested_auto:
        for partition in auto.get_requested_partitions(factory.asset_key("quick", name)):
            materialize([name], partition, instance, raise_on_error=True)

    # the run records: only tiny-2's partitions and the study assets were computed since the registration
    recomputed = [(a, p) for a, p, fresh in _materialized_since(instance, since) if fresh]
    assert recomputed and all(a in _automated() or "tiny-2" in str(p).split("|") for a, p in recomputed), recomputed
    assert {(a, p) for a, p in recomputed if a not in _automated()} >= {("benchmark_evaluation", mb(b)) for b in BENCHMARKS}
    wh = Warehouse()
    scores = wh.query("select model, count(*) n from benchmark_scores where profile = 'quick' group by 1 order by 1")
    assert scores.to_dict("records") == [{"model": "tiny-2", "n": 3}, {"model": "tiny-llama", "n": 3}]  # 3 benchmarks
    corr = wh.query("select distinct model from correlations where profile = 'quick' order by 1")
    assert corr["model"].tolist() == ["tiny-2", "tiny-llama"]


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
    assert {s.name for s in repo.sensor_defs} == {"catalog_sync_quick", "catalog_sync_full", "study_automation"}

    executor = yaml.safe_load((k8s / "executor.yaml").read_text())
    schema = k8s_job_executor.config_schema.config_type
    assert process_config(schema, executor).success
    assert not process_config(schema, {**executor, "max_concurrent": "many"}).success  # the check is real
    gpu = executor["per_step_k8s_config"]["full__benchmark_evaluation"]
    assert gpu["container_config"]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    steps = {a.op.name for a in runner.definitions().assets or ()}
    assert set(executor["per_step_k8s_config"]) <= steps  # step names that exist (the model-loading ones)
    assert {s for s in steps if factory.COMPUTATIONS[s.split("__")[1]].pool == "model"} <= set(executor["per_step_k8s_config"])

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
    from simassets.defs import planning

    runner.repository()
    scope = StudyResource().scope("quick")

    def keys(selection):
        out = set()
        for unit in planning.units(selection):
            for dim in {d for c in unit.computations for d in c.dimensions}:
                out |= {(dim, v) for v in selection.values(scope, dim)}
        return out

    full = runner.selection_for()
    only = runner.selection_for(study="multilingual", skip=["corpus_perplexity", "benchmark_task2vec"])
    names = {c.name for c in only.computations()}
    assert "corpus_perplexity" not in names and "benchmark_task2vec" not in names and "benchmark_embeddings" in names
    assert ("study", "multilingual") in keys(only) and ("study", "all") not in keys(only)
    assert ("benchmark", "xcopa_et") in keys(only) and ("benchmark", "arc_easy") not in keys(only)
    assert keys(only) < keys(full)
    assert "unlearning_runs" not in {c.name for c in full.computations()}
    assert "unlearning_runs" in {c.name for c in runner.selection_for(experiments=True).computations()}
    with pytest.raises(ValueError, match="unknown asset"):
        runner.selection_for(skip=["no_such_asset"]).computations()
    assert cli.main(["run", "--study", "no_such_study"]) == 2


def test_the_runner_starts_the_evaluation_without_waiting_for_the_corpus_x_benchmark_measures():
    """``simassets run`` splits off an asset that waits for a deeper unit (contamination_gain reads every corpus's
    text_similarity), so the evaluation starts once the benchmarks are in; the sensors keep it with the evaluation
    (they request only work whose upstream is stored, and a new model's gain then comes in the same runs)."""
    runner.repository()  # every computation registered
    selection = planning.Selection()
    for split in (True, False):
        units = planning.units(selection, split=split)
        where = {name: i for i, u in enumerate(units) for name in u.names}
        assert all(n < i for i, u in enumerate(units) for n in u.needs)  # every unit after the units it needs
        assert sorted(where) == sorted(c.name for c in selection.computations())
        evaluation, gain = units[where["benchmark_evaluation"]], units[where["contamination_gain"]]
        assert "corpus_x_benchmark" in {units[n].partitioning for n in gain.needs}
        if split:
            assert evaluation.names == ("benchmark_evaluation", "model_similarity")
            assert gain.names == ("contamination_gain",)
            assert where["benchmark_evaluation"] in gain.needs
            assert {units[n].partitioning for n in evaluation.needs} == {"corpus", "benchmark"}
        else:
            assert evaluation is gain and len(evaluation.names) == 3


def test_ready_pieces_start_with_the_units_most_others_wait_for():
    """The corpus unit (every later unit reads it) starts before the benchmark unit, the evaluation before the
    corpus x benchmark measures, and corpus perplexity (nothing waits for it) last, as a filler."""
    runner.repository()
    units = planning.units(planning.Selection())
    where = {name: i for i, u in enumerate(units) for name in u.names}
    dependents = runner._dependents(units)
    independent = {where["corpus_documents"], where["benchmark_examples"], where["measure_registry"]}
    assert dependents[where["corpus_documents"]] == len(set(range(len(units))) - independent)  # all the others
    assert dependents[where["corpus_documents"]] > dependents[where["benchmark_examples"]] > 0
    assert dependents[where["corpus_perplexity"]] == dependents[where["correlations"]] == 0

    def piece(asset: str, size: int) -> tuple:
        unit = units[where[asset]]
        work = planning.Work("quick", unit.partitioning, unit.names, (("x", tuple(map(str, range(size)))),))
        return runner._cost(work, dependents[where[asset]])

    order = sorted(["corpus_documents", "benchmark_examples", "benchmark_evaluation", "text_similarity",
                    "corpus_perplexity"], key=lambda a: piece(a, 1 if a == "corpus_documents" else 20))
    assert order == ["corpus_documents", "benchmark_examples", "benchmark_evaluation", "text_similarity",
                     "corpus_perplexity"]


def test_a_ui_run_whose_process_is_gone_is_failed_at_the_next_tick_and_gives_back_its_slots(tiny_study):
    """A UI run whose process died (dg dev stopped mid-run, the OOM killer) stays STARTED: the local run launcher
    has no health check for Dagster's run monitoring. It would hold a run-queue slot and its pool slot forever, and
    the next model's runs would stay queued (found by stopping ``simassets ui`` during a refresh and starting it
    again). The sync sensor's tick fails it; a run whose process lives is left alone."""
    from dagster._core.events import DagsterEvent
    from dagster._core.storage.dagster_run import DagsterRun

    gone = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True).stdout)
    with dg.instance_for_test() as instance:
        storage = instance.event_log_storage
        storage.set_concurrency_slots("model", 2)
        runs = {}
        for name, pid in (("dead", gone), ("alive", os.getpid())):
            run = instance.add_run(DagsterRun(job_name="quick__refresh_model_x_benchmark", run_id=str(uuid.uuid4()),
                                              status=dg.DagsterRunStatus.STARTED))
            instance.report_dagster_event(DagsterEvent(dg.DagsterEventType.RUN_START.value, run.job_name, pid=pid),
                                          run.run_id)
            assert storage.claim_concurrency_slot("model", run.run_id, "quick__benchmark_evaluation").is_claimed
            runs[name] = run.run_id
        _tick(instance)
        status = {name: instance.get_run_by_id(run_id).status for name, run_id in runs.items()}
        assert status == {"dead": dg.DagsterRunStatus.FAILURE, "alive": dg.DagsterRunStatus.STARTED}
        assert any(f"(pid {gone}) is gone" in (e.message or "") for e in instance.all_logs(runs["dead"]))
        assert [s.run_id for s in storage.get_concurrency_info("model").claimed_slots] == [runs["alive"]]
