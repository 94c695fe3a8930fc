"""Task2Vec: Fisher embeddings of every dataset under a probe LM, diversity and alignment coefficients."""

import dataclasses

import dagster as dg
import pandas as pd

from simassets.core.hashing import canonical_json
from simassets.defs.benchmarks import benchmark_examples
from simassets.defs.common import Freshness, partition_fingerprint, skipped, upstream_fingerprint
from simassets.defs.corpora import corpus_documents
from simassets.defs.embeddings import benchmark_text
from simassets.defs.partitions import benchmark_partitions, corpus_benchmark_partitions, corpus_partitions, keys_of
from simassets.defs.resources import StudyResource

CODE_VERSION = "1"


def task2vec_params(profile: str, seed: int):
    from simassets.core.measures.task2vec import Task2VecParams

    if profile == "quick":  # the cheap probe parameters: last block only, small batches
        return Task2VecParams(batch_size=4, seq_len=64, n_batches=3, seed=seed, parameters="last_block")
    return Task2VecParams(batch_size=8, seq_len=128, n_batches=4, seed=seed, parameters="all")


def probe_spec(study: StudyResource):
    """The Task2Vec probe of every Task2Vec measure (the assets here and the training interventions): the
    profile's pinned ``task2vec_probe``, else the registered model of the profile with the fewest parameters.

    Pin it: with the fallback, registering a smaller model changes the probe and so every Task2Vec row."""
    from simassets.core.finetune import smallest_model
    from simassets.core.models import models_for_profile

    registry, profile = study.models(), study.profile_name
    pinned = study.profile_spec().task2vec_probe
    if pinned:
        if pinned not in registry:
            raise dg.Failure(f"{study.catalog().source_file}: [profiles.{profile}] task2vec_probe = {pinned!r} is not "
                             f"in the model registry {study.catalog_path / 'models.toml'} (registered: {sorted(registry)})")
        return registry[pinned]
    specs = models_for_profile(registry, profile) or list(registry.values())
    if not specs:
        raise dg.Failure("Task2Vec needs a probe model: register one with `simassets models add`")
    return smallest_model(specs)


def _texts(study: StudyResource, kind: str, name: str) -> list[str]:
    wh, profile = study.warehouse(), study.profile_name
    if kind == "corpus":
        return wh.read_partition("corpus_documents", profile, {"corpus": name})["text"].tolist()
    return benchmark_text(wh.read_partition("benchmark_examples", profile, {"benchmark": name}))


def _freshness(study: StudyResource, kind: str, name: str) -> Freshness:
    from simassets.core.models import model_fingerprint

    upstream = "corpus_documents" if kind == "corpus" else "benchmark_examples"
    probe = probe_spec(study)
    params = task2vec_params(study.profile_name, study.profile_spec().seed)
    fp = partition_fingerprint("task2vec", CODE_VERSION, probe=model_fingerprint(probe), params=dataclasses.asdict(params),
                               upstream=upstream_fingerprint(study.warehouse(), upstream, study.profile_name, {kind: name}))
    return Freshness(("dataset_diversity",), {"dataset_kind": kind, "dataset": name}, fp)


def _embed(context: dg.AssetExecutionContext, study: StudyResource, kind: str) -> dg.MaterializeResult:
    from simassets.core.measures.task2vec import Task2VecCache, diversity_coefficient
    from simassets.core.models import load_causal_lm

    name, wh, profile = context.partition_key, study.warehouse(), study.profile_name
    fresh = _freshness(study, kind, name)
    if fresh.fresh(wh, profile):
        return skipped(context, wh, "dataset_diversity", profile, fresh.keys, fresh.fingerprint)
    probe = load_causal_lm(probe_spec(study))
    params = task2vec_params(profile, study.profile_spec().seed)
    context.log.info(f"Task2Vec {kind} {name}: {params.n_batches} batches with probe {probe.spec.id}")
    embs = Task2VecCache(study.cache_dir / "task2vec").embeddings(probe.model, probe.tokenizer, _texts(study, kind, name),
                                                                  params, probe.fingerprint)
    div = diversity_coefficient(embs)
    row = pd.DataFrame([{"dataset_kind": kind, "dataset": name, "probe": probe.spec.id, "value": div.value,
                         "ci_low": div.ci_low, "ci_high": div.ci_high, "n_pairs": div.n_pairs,
                         "params": canonical_json({**params.as_dict(), "probe_fingerprint": probe.fingerprint})}])
    wh.write_partition("dataset_diversity", profile, fresh.keys, row, fresh.fingerprint)
    return dg.MaterializeResult(
        metadata={"diversity_coefficient": div.value, "ci_low": div.ci_low, "ci_high": div.ci_high,
                  "probe": probe.spec.id, "batches": params.n_batches, "batch_size": params.batch_size,
                  "seq_len": params.seq_len, "parameters": params.parameters, "fingerprint": fresh.fingerprint[:16]},
        data_version=dg.DataVersion(fresh.fingerprint),
    )


def corpus_task2vec_freshness(study: StudyResource, partition_key: str) -> Freshness:
    return _freshness(study, "corpus", partition_key)


def benchmark_task2vec_freshness(study: StudyResource, partition_key: str) -> Freshness:
    return _freshness(study, "benchmark", partition_key)


@dg.asset(partitions_def=corpus_partitions, deps=[corpus_documents], group_name="task2vec", kinds={"pytorch", "numpy"},
          code_version=CODE_VERSION, pool="model", retry_policy=dg.RetryPolicy(max_retries=2, delay=5))
def corpus_task2vec(context: dg.AssetExecutionContext, study: StudyResource) -> dg.MaterializeResult:
    """Task2Vec batch embeddings (diagonal Fisher of the probe LM, cached per dataset/probe/parameters) of a corpus sample and its diversity coefficient."""
    return _embed(context, study, "corpus")


@dg.asset(partitions_def=benchmark_partitions, deps=[benchmark_examples], group_name="task2vec", kinds={"pytorch", "numpy"},
          code_version=CODE_VERSION, pool="model", retry_policy=dg.RetryPolicy(max_retries=2, delay=5))
def benchmark_task2vec(context: dg.AssetExecutionContext, study: StudyResource) -> dg.MaterializeResult:
    """Task2Vec batch embeddings of a benchmark's examples (rendered input + gold continuation) and its diversity coefficient."""
    return _embed(context, study, "benchmark")


def task2vec_alignment_freshness(study: StudyResource, partition_key: str) -> Freshness:
    keys = keys_of(corpus_benchmark_partitions, partition_key)
    wh, profile = study.warehouse(), study.profile_name
    fp = partition_fingerprint("task2vec_alignment", CODE_VERSION, corpus=upstream_fingerprint(
        wh, "dataset_diversity", profile, {"dataset_kind": "corpus", "dataset": keys["corpus"]}),
        benchmark=upstream_fingerprint(wh, "dataset_diversity", profile, {"dataset_kind": "benchmark", "dataset": keys["benchmark"]}))
    return Freshness(("dataset_similarity",), {**keys, "asset": "task2vec_alignment"}, fp)


@dg.asset(partitions_def=corpus_benchmark_partitions, deps=[corpus_task2vec, benchmark_task2vec], group_name="task2vec",
          kinds={"numpy", "parquet"}, code_version=CODE_VERSION)
def task2vec_alignment(context: dg.AssetExecutionContext, study: StudyResource) -> dg.MaterializeResult:
    """Alignment coefficient between a corpus sample and a benchmark: 1 - expected Task2Vec distance between a corpus batch and a benchmark batch, with a 95% interval over batch pairs (from the cached embeddings; no model pass)."""
    from simassets.core.measures.task2vec import Task2VecCache, alignment_coefficient, texts_fingerprint
    from simassets.core.models import model_fingerprint

    fresh = task2vec_alignment_freshness(study, context.partition_key)
    keys, wh, profile = fresh.keys, study.warehouse(), study.profile_name
    if fresh.fresh(wh, profile):
        return skipped(context, wh, "dataset_similarity", profile, keys, fresh.fingerprint)
    probe, params = probe_spec(study), task2vec_params(profile, study.profile_spec().seed)
    cache, probe_fp = Task2VecCache(study.cache_dir / "task2vec"), model_fingerprint(probe)
    embs = {kind: cache.load(texts_fingerprint(_texts(study, kind, keys[kind])), probe_fp, params)
            for kind in ("corpus", "benchmark")}
    if any(e is None for e in embs.values()):
        raise dg.Failure(f"Task2Vec embeddings missing for {keys}: materialize corpus_task2vec and benchmark_task2vec first")
    res = alignment_coefficient(embs["corpus"], embs["benchmark"])
    row = pd.DataFrame([{"corpus": keys["corpus"], "benchmark": keys["benchmark"], "model": "", "measure": "task2vec_alignment",
                         "value": res.value, "ci_low": res.ci_low, "ci_high": res.ci_high, "n": res.n_pairs,
                         "warning": None, "params": canonical_json({**params.as_dict(), "probe": probe.id})}])
    wh.write_partition("dataset_similarity", profile, keys, row, fresh.fingerprint)
    return dg.MaterializeResult(metadata={"alignment_coefficient": res.value, "ci_low": res.ci_low, "ci_high": res.ci_high,
                                          "batch_pairs": res.n_pairs, "probe": probe.id},
                                data_version=dg.DataVersion(fresh.fingerprint))
