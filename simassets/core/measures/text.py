"""The model-free text family's asset: hashed uni+bigram KL/JS (DSIR features) with per-example importance
weights, gzip NCD alignment against the corpus sample, and whole-corpus contamination (longest match, match
coverage, contaminated fractions) against the corpus's suffix-array index, with evidence.

The measures themselves live in :mod:`.hashed_ngrams`, :mod:`.compression` and :mod:`.contamination`; this module
computes them together because they share the corpus side (hashed once per corpus content and process).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import pandas as pd

from simassets.core.computation import Call, Computation, Output, Scope, Upstream, benchmark_chars, table_md
from simassets.core.hashing import canonical_json
from simassets.core.measures.registry import register_family
from simassets.core.schema import (BENCHMARK_EXAMPLES, CORPUS_DOCUMENTS, CORPUS_INDEXES, DATASET_SIMILARITY,
                                   EXAMPLE_SIMILARITY)
from simassets.core.tasks import benchmark_text

N_BOOT = {"quick": 200, "full": 1000}
GZIP_PAIRS = {"quick": 1000, "full": 5000}
_CORPUS_FEATURES: OrderedDict[str, dict[str, Any]] = OrderedDict()  # corpus content fingerprint -> features
_CORPUS_FEATURES_MAX = 8


def corpus_features(corpus: pd.DataFrame, fingerprint: str | None = None) -> dict[str, Any]:
    """The corpus side of the text measures (hashed uni+bigram counts, n-gram indexes), built once per
    corpus content in this process: a corpus is compared with every benchmark, so this saves rehashing
    it for each one. ``fingerprint`` is the stored partition's content fingerprint (no caching without it)."""
    from simassets.core.measures.hashed_ngrams import featurize

    if fingerprint and fingerprint in _CORPUS_FEATURES:
        _CORPUS_FEATURES.move_to_end(fingerprint)
        return _CORPUS_FEATURES[fingerprint]
    texts = corpus["text"].tolist()
    feats = {"hashed": featurize(texts)}
    if fingerprint:
        _CORPUS_FEATURES[fingerprint] = feats
        while len(_CORPUS_FEATURES) > _CORPUS_FEATURES_MAX:
            _CORPUS_FEATURES.popitem(last=False)
    return feats


def text_similarity_rows(bench: pd.DataFrame, corpus: pd.DataFrame, n_boot: int, gzip_pairs: int,
                         seed: int, corpus_fingerprint: str | None = None,
                         kl_options: dict | None = None, index=None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-example and dataset-level rows (measure, value, ...) of the model-free text measures.

    ``kl_options`` chooses the hashed-n-gram KL estimator (``estimator``, ``lam``, ``eps``; the catalog's
    ``[measures.hashed_ngram_kl]``); the default is the interpolated estimator. ``index`` (an opened
    :class:`~simassets.core.corpus_index.CorpusIndex` of the whole corpus) adds the contamination rows."""
    from simassets.core.measures.compression import gzip_alignment
    from simassets.core.measures.contamination import contamination_rows
    from simassets.core.measures.hashed_ngrams import hashed_ngram_measures

    btexts, ctexts = benchmark_text(bench), corpus["text"].tolist()
    ids = bench["example_id"].to_numpy()
    feats = corpus_features(corpus, corpus_fingerprint)
    hashed = hashed_ngram_measures(btexts, feats["hashed"], n_boot=n_boot, seed=seed, **(kl_options or {}))
    gz = gzip_alignment(btexts, ctexts, n_pairs=gzip_pairs, seed=seed)
    hashed_params = canonical_json({k: hashed[k] for k in ("num_buckets", "ngrams", "tokenizer", "hash", "eps", "n_boot",
                                                           "seed", "ci", "kl_estimator")}
                                   | {"ci_method": "basic bootstrap over corpus documents"})
    gz_params = canonical_json({k: gz[k] for k in ("n_pairs", "docs_per_example", "seed", "compresslevel", "separator",
                                                   "order")})

    def per_example(measure: str, values, params: str, evidence=None) -> pd.DataFrame:
        return pd.DataFrame({"example_id": ids, "measure": measure, "value": values, "evidence": evidence,
                             "params": params})

    ex_frames = [
        per_example("importance_log_weight", hashed["log_weight"], hashed_params),
        per_example("importance_log_weight_per_feature", hashed["log_weight_per_feature"], hashed_params),
        per_example("gzip_alignment", 1.0 - gz["per_example_ncd"], gz_params),
    ]
    ds_rows = [
        {"measure": "hashed_ngram_kl", "value": hashed["kl"], "ci_low": hashed["kl_basic_ci_low"],
         "ci_high": hashed["kl_basic_ci_high"], "params": hashed_params},
        {"measure": "hashed_ngram_js", "value": hashed["js"], "params": hashed_params},
        {"measure": "gzip_alignment", "value": gz["gzip_alignment"], "params": gz_params},
    ]
    dataset = pd.DataFrame(ds_rows)
    if index is not None:
        ex_cont, ds_cont = contamination_rows(btexts, ids, index, seed)
        ex_frames.append(ex_cont)
        dataset = pd.concat([dataset, ds_cont], ignore_index=True)
    examples = pd.concat(ex_frames, ignore_index=True)
    dataset = dataset.reindex(columns=["measure", "value", "ci_low", "ci_high", "warning", "params"])
    dataset["n"] = len(bench)
    return examples, dataset


def _inputs(scope: Scope, keys) -> dict:
    return {"n_boot": N_BOOT[scope.profile], "gzip_pairs": GZIP_PAIRS[scope.profile], "seed": scope.seed,
            "kl": scope.catalog.kl_options("hashed_ngram_kl"),
            "corpus": scope.upstream(CORPUS_DOCUMENTS, {"corpus": keys["corpus"]}),
            "index": scope.upstream(CORPUS_INDEXES, {"corpus": keys["corpus"]}),
            "benchmark": scope.upstream(BENCHMARK_EXAMPLES, {"benchmark": keys["benchmark"]})}


def _cost(scope: Scope, keys) -> float:
    """Relative work of a pair, in about seconds on the quick profile: 0.12 s whatever the benchmark, plus ~1 s per
    48.6k characters of it (gzip pairs, bootstrap, index lookups). Least squares over the 195 pairs' measured
    seconds of a quick run (r^2 0.77); the earlier 1 + chars / 25k predates the faster bootstrap and weighed the
    fixed part 4x too much, so the two parallel runs of the unit took 41 s and 55 s."""
    return 0.12 + benchmark_chars(scope, keys["benchmark"]) / 48_600


def _compute(call: Call) -> Output:
    from simassets.core.measures.contamination import index_folder, open_index

    bench = call.read(BENCHMARK_EXAMPLES, benchmark=call.keys["benchmark"])
    corpus = call.read(CORPUS_DOCUMENTS, corpus=call.keys["corpus"])
    index = open_index(index_folder(call.scope, call.keys["corpus"]))
    examples, dataset = text_similarity_rows(bench, corpus, N_BOOT[call.profile], GZIP_PAIRS[call.profile],
                                             call.scope.seed, call.inputs["corpus"], call.inputs["kl"], index)
    contaminated = float(dataset.loc[dataset["measure"] == "contaminated_fraction_13", "value"].iloc[0])
    return Output({EXAMPLE_SIMILARITY: examples.assign(model=""), DATASET_SIMILARITY: dataset.assign(model="")},
                  metadata={"examples": len(bench), "corpus_sample_docs": len(corpus),
                            "corpus_index_docs": index.info.n_docs, "contaminated_fraction_13": contaminated,
                            "dataset_measures": table_md(dataset[["measure", "value", "ci_low", "ci_high"]])})


FAMILY = register_family(Computation(
    name="text_similarity", group="similarity", partitioning="corpus_x_benchmark",
    description="Model-free similarity of a benchmark to a corpus sample: hashed uni+bigram KL/JS (DSIR features) "
                "with per-example importance weights, gzip NCD alignment, and whole-corpus contamination (longest "
                "match, coverage and contaminated fraction at 8/13/25/50 words against the corpus index) with "
                "evidence.",
    writes=(EXAMPLE_SIMILARITY, DATASET_SIMILARITY), inputs=_inputs, compute=_compute,
    upstream=(Upstream("corpus_documents"), Upstream("corpus_index"), Upstream("benchmark_examples")),
    kinds=("numpy", "parquet"), code_version="3", storage_keys=lambda keys: {**keys, "asset": "text_similarity"},
    cost=_cost))
