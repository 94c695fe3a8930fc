"""Embeddings of every corpus sample and benchmark: sentence embeddings (all-MiniLM-L6-v2, cached by text) and
Task2Vec Fisher embeddings under the probe LM (cached by content), with each dataset's diversity coefficient."""

import dataclasses

import dagster as dg
import numpy as np
import pandas as pd

from simassets.core.computation import Call, Check, Computation, Output, Scope, Upstream
from simassets.core.embeddings import UNKNOWN_SHARE_LIMIT
from simassets.core.hashing import canonical_json, sha256_text
from simassets.core.measures.task2vec import dataset_texts, probe_spec, task2vec_params
from simassets.core.schema import (BENCHMARK_EMBEDDINGS, BENCHMARK_EXAMPLES, CORPUS_DOCUMENTS, CORPUS_EMBEDDINGS,
                                   DATASET_DIVERSITY)
from simassets.core.tasks import benchmark_text
from simassets.defs.factory import build

#: per dataset kind: (its rows, its id column, the texts embedded)
SOURCES = {"corpus": (CORPUS_DOCUMENTS, "doc_id", lambda df: df["text"].tolist()),
           "benchmark": (BENCHMARK_EXAMPLES, "example_id", benchmark_text)}


def _embedder(scope: Scope):
    from simassets.core.embeddings import get_embedder

    return get_embedder(cache_root=scope.cache_dir / "embeddings")


# --------------------------------------------------------------------------- sentence embeddings
def _sentence_inputs(kind: str):
    def inputs(scope: Scope, keys) -> dict:
        return {"upstream": scope.upstream(SOURCES[kind][0], keys), "embedder": _embedder(scope).model_key}

    return inputs


def _sentence_embeddings(kind: str):
    def compute(call: Call) -> Output:
        table, id_col, texts_of = SOURCES[kind]
        embedder = _embedder(call.scope)
        src = call.scope.read(table, call.keys)
        texts = texts_of(src)
        vectors = embedder.embed(texts)
        stats = embedder.last_stats
        call.log(f"{kind} {dict(call.keys)}: {stats.hits} cached, {stats.misses} embedded in {stats.seconds:.1f}s")
        rows = pd.DataFrame({id_col: src[id_col].to_numpy(), "text_sha256": [sha256_text(t) for t in texts],
                             "embedding_model": embedder.model_key, "embedding": list(vectors.astype(np.float32)),
                             "params": canonical_json(embedder.params())})
        return Output({CORPUS_EMBEDDINGS if kind == "corpus" else BENCHMARK_EMBEDDINGS: rows}, metadata={
            "dim": int(vectors.shape[1]), "cache_hits": stats.hits, "embedded": stats.misses,
            "embedding_model": embedder.model_key})

    return compute


def _reads_text(kind: str) -> Check:
    """Warns where the embedding model cannot read a dataset: more than ``UNKNOWN_SHARE_LIMIT`` of the word pieces
    it reads are its unknown token (MiniLM on XCOPA's Thai, Chinese and Tamil). The vectors, and every embedding
    measure from them, then describe the tokenizer's gaps rather than the text; the rows are kept."""
    table, _, texts_of = SOURCES[kind]

    def outcome(scope: Scope, keys, tables) -> dict | None:
        embedder = _embedder(scope)
        share, pieces = embedder.unknown_share(texts_of(scope.read(table, keys)))
        if share <= UNKNOWN_SHARE_LIMIT:
            return None
        return {"unknown_token_share": round(share, 4), "pieces": pieces, "limit": UNKNOWN_SHARE_LIMIT,
                "embedding_model": embedder.source.name}

    return Check("embedder_reads_text", f"at most {UNKNOWN_SHARE_LIMIT:.0%} of the word pieces the embedding model "
                 "reads are its unknown token (else its vectors describe its vocabulary's gaps, not the text)", outcome)


def _sentence_step(kind: str, description: str) -> Computation:
    return Computation(
        name=f"{kind}_embeddings", group="embeddings", partitioning=kind, description=description,
        writes=(CORPUS_EMBEDDINGS if kind == "corpus" else BENCHMARK_EMBEDDINGS,),
        inputs=_sentence_inputs(kind), compute=_sentence_embeddings(kind), upstream=(Upstream(SOURCES[kind][0]),),
        kinds=("pytorch", "parquet"), pool="cpu_heavy", own_checks=(_reads_text(kind),))


CORPUS_EMBEDDINGS_STEP = _sentence_step(
    "corpus", "all-MiniLM-L6-v2 embeddings of a corpus sample; no text is embedded twice (cache by text sha256 and model).")
BENCHMARK_EMBEDDINGS_STEP = _sentence_step(
    "benchmark", "all-MiniLM-L6-v2 embeddings of a benchmark's examples (rendered input + gold continuation, as scored).")


# --------------------------------------------------------------------------- Task2Vec
def _task2vec_inputs(kind: str):
    def inputs(scope: Scope, keys) -> dict:
        from simassets.core.models import model_fingerprint

        return {"probe": model_fingerprint(probe_spec(scope)),
                "params": dataclasses.asdict(task2vec_params(scope.profile, scope.seed)),
                "upstream": scope.upstream(SOURCES[kind][0], keys)}

    return inputs


def _task2vec(kind: str):
    def compute(call: Call) -> Output:
        from simassets.core.measures.task2vec import Task2VecCache, diversity_coefficient
        from simassets.core.models import load_causal_lm

        name, scope = call.keys[kind], call.scope
        probe = load_causal_lm(probe_spec(scope), device="cpu")  # its cached embeddings are CPU results
        params = task2vec_params(call.profile, scope.seed)
        call.log(f"Task2Vec {kind} {name}: {params.n_batches} batches with probe {probe.spec.id}")
        embs = Task2VecCache(scope.cache_dir / "task2vec").embeddings(
            probe.model, probe.tokenizer, dataset_texts(scope, kind, name), params, probe.fingerprint)
        div = diversity_coefficient(embs)
        row = pd.DataFrame([{"dataset_kind": kind, "dataset": name, "probe": probe.spec.id, "value": div.value,
                             "ci_low": div.ci_low, "ci_high": div.ci_high, "n_pairs": div.n_pairs,
                             "params": canonical_json({**params.as_dict(), "probe_fingerprint": probe.fingerprint})}])
        return Output({DATASET_DIVERSITY: row}, metadata={
            "diversity_coefficient": div.value, "ci_low": div.ci_low, "ci_high": div.ci_high, "probe": probe.spec.id,
            "batches": params.n_batches, "batch_size": params.batch_size, "seq_len": params.seq_len,
            "parameters": params.parameters})

    return compute


def _task2vec_step(kind: str, description: str) -> Computation:
    return Computation(
        name=f"{kind}_task2vec", group="task2vec", partitioning=kind, description=description,
        writes=(DATASET_DIVERSITY,), inputs=_task2vec_inputs(kind), compute=_task2vec(kind),
        upstream=(Upstream(SOURCES[kind][0]),), kinds=("pytorch", "numpy"), pool="model", retries=2,
        storage_keys=lambda keys: {"dataset_kind": kind, "dataset": keys[kind]})


CORPUS_TASK2VEC_STEP = _task2vec_step(
    "corpus", "Task2Vec batch embeddings (diagonal Fisher of the probe LM, cached per dataset/probe/parameters) of a "
              "corpus sample and its diversity coefficient.")
BENCHMARK_TASK2VEC_STEP = _task2vec_step(
    "benchmark", "Task2Vec batch embeddings of a benchmark's examples (rendered input + gold continuation) and its "
                 "diversity coefficient.")

defs = dg.Definitions(assets=build(CORPUS_EMBEDDINGS_STEP, BENCHMARK_EMBEDDINGS_STEP, CORPUS_TASK2VEC_STEP,
                                   BENCHMARK_TASK2VEC_STEP))
