"""Model-free text similarity of each benchmark to each corpus: hashed n-grams, gzip, n-gram overlap."""

import math
from collections import OrderedDict
from typing import Any

import dagster as dg
import pandas as pd

from simassets.core.hashing import canonical_json
from simassets.defs.benchmarks import benchmark_examples
from simassets.defs.checks import finite_in_range_check, finite_in_range_spec
from simassets.defs.common import Freshness, partition_fingerprint, skipped, table_md, upstream_fingerprint
from simassets.defs.corpora import corpus_documents
from simassets.defs.embeddings import benchmark_text
from simassets.defs.partitions import corpus_benchmark_partitions, keys_of
from simassets.defs.resources import StudyResource

CODE_VERSION = "2"  # 2: gzip NCD concatenates doc + " " + example (one deflate per document)
N_BOOT = {"quick": 200, "full": 1000}
GZIP_PAIRS = {"quick": 1000, "full": 5000}
RANGES = {
    "hashed_ngram_kl": (0.0, math.inf), "hashed_ngram_js": (0.0, math.log(2)),
    "gzip_alignment": (-0.5, 1.0), "ngram_overlap_13": (0.0, 1.0), "ngram_overlap_8": (0.0, 1.0),
    "contaminated_fraction_13": (0.0, 1.0), "contaminated_fraction_8": (0.0, 1.0),
}


def text_similarity_freshness(study: StudyResource, partition_key: str) -> Freshness:
    keys = keys_of(corpus_benchmark_partitions, partition_key)
    profile, wh = study.profile_name, study.warehouse()
    fp = partition_fingerprint(
        "text_similarity", CODE_VERSION, n_boot=N_BOOT[profile], gzip_pairs=GZIP_PAIRS[profile],
        seed=study.profile_spec().seed,
        corpus=upstream_fingerprint(wh, "corpus_documents", profile, {"corpus": keys["corpus"]}),
        benchmark=upstream_fingerprint(wh, "benchmark_examples", profile, {"benchmark": keys["benchmark"]}),
    )
    return Freshness(("example_similarity", "dataset_similarity"), {**keys, "asset": "text_similarity"}, fp)


OVERLAP_NS = (13, 8)
_CORPUS_FEATURES: OrderedDict[str, dict[str, Any]] = OrderedDict()  # corpus content fingerprint -> features
_CORPUS_FEATURES_MAX = 8


def corpus_features(corpus: pd.DataFrame, fingerprint: str | None = None) -> dict[str, Any]:
    """The corpus side of the text measures (hashed uni+bigram counts, n-gram indexes), built once per
    corpus content in this process: a corpus is compared with every benchmark, so this saves rehashing
    it for each one. ``fingerprint`` is the stored partition's content fingerprint (no caching without it)."""
    from simassets.core.measures.hashed_ngrams import featurize
    from simassets.core.measures.overlap import build_indexes

    if fingerprint and fingerprint in _CORPUS_FEATURES:
        _CORPUS_FEATURES.move_to_end(fingerprint)
        return _CORPUS_FEATURES[fingerprint]
    texts = corpus["text"].tolist()
    feats = {"hashed": featurize(texts), "overlap": build_indexes(texts, OVERLAP_NS, corpus["doc_id"].tolist())}
    if fingerprint:
        _CORPUS_FEATURES[fingerprint] = feats
        while len(_CORPUS_FEATURES) > _CORPUS_FEATURES_MAX:
            _CORPUS_FEATURES.popitem(last=False)
    return feats


def text_similarity_rows(bench: pd.DataFrame, corpus: pd.DataFrame, n_boot: int, gzip_pairs: int,
                         seed: int, corpus_fingerprint: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-example and dataset-level rows (measure, value, ...) of the model-free text measures."""
    from simassets.core.measures.compression import gzip_alignment
    from simassets.core.measures.hashed_ngrams import hashed_ngram_measures
    from simassets.core.measures.overlap import overlap_measures

    btexts, ctexts = benchmark_text(bench), corpus["text"].tolist()
    ids = bench["example_id"].to_numpy()
    feats = corpus_features(corpus, corpus_fingerprint)
    hashed = hashed_ngram_measures(btexts, feats["hashed"], n_boot=n_boot, seed=seed)
    gz = gzip_alignment(btexts, ctexts, n_pairs=gzip_pairs, seed=seed)
    ov = overlap_measures(btexts, feats["overlap"], ns=OVERLAP_NS)
    hashed_params = canonical_json({k: hashed[k] for k in ("num_buckets", "ngrams", "tokenizer", "hash", "eps", "n_boot", "seed", "ci")}
                                   | {"ci_method": "basic bootstrap over corpus documents"})
    gz_params = canonical_json({k: gz[k] for k in ("n_pairs", "docs_per_example", "seed", "compresslevel", "separator", "order")})
    ex_frames = [
        pd.DataFrame({"example_id": ids, "measure": "importance_log_weight", "value": hashed["log_weight"], "evidence": None, "params": hashed_params}),
        pd.DataFrame({"example_id": ids, "measure": "importance_log_weight_per_feature", "value": hashed["log_weight_per_feature"], "evidence": None, "params": hashed_params}),
        pd.DataFrame({"example_id": ids, "measure": "gzip_alignment", "value": 1.0 - gz["per_example_ncd"], "evidence": None, "params": gz_params}),
    ]
    ds_rows = [
        {"measure": "hashed_ngram_kl", "value": hashed["kl"], "ci_low": hashed["kl_basic_ci_low"], "ci_high": hashed["kl_basic_ci_high"], "params": hashed_params},
        {"measure": "hashed_ngram_js", "value": hashed["js"], "params": hashed_params},
        {"measure": "gzip_alignment", "value": gz["gzip_alignment"], "params": gz_params},
    ]
    for n, res in ov.items():
        params = canonical_json({"n": n, "normalization": res["normalization"], "corpus_docs": res["n_corpus_docs"]})
        evidence = [f"{d}: {g}" if d else None for d, g in zip(res["evidence_doc_id"], res["evidence_ngram"])]
        ex_frames.append(pd.DataFrame({"example_id": ids, "measure": f"ngram_overlap_{n}", "value": res["overlap_fraction"],
                                       "evidence": evidence, "params": params}))
        ds_rows += [{"measure": f"ngram_overlap_{n}", "value": res["mean_overlap_fraction"], "params": params},
                    {"measure": f"contaminated_fraction_{n}", "value": res["contaminated_fraction"], "params": params,
                     "warning": f"{res['n_short']} examples shorter than {n} words count as clean" if res["n_short"] else None}]
    examples = pd.concat(ex_frames, ignore_index=True)
    dataset = pd.DataFrame(ds_rows).reindex(columns=["measure", "value", "ci_low", "ci_high", "warning", "params"])
    dataset["n"] = len(bench)
    return examples, dataset


@dg.asset(
    partitions_def=corpus_benchmark_partitions,
    deps=[corpus_documents, benchmark_examples],
    group_name="similarity",
    kinds={"numpy", "parquet"},
    code_version=CODE_VERSION,
    check_specs=[finite_in_range_spec("text_similarity")],
)
def text_similarity(context: dg.AssetExecutionContext, study: StudyResource) -> dg.MaterializeResult:
    """Model-free similarity of a benchmark to a corpus sample: hashed uni+bigram KL/JS (DSIR features) with per-example importance weights, gzip NCD alignment, and 13/8-gram overlap (contamination) with evidence."""
    fresh = text_similarity_freshness(study, context.partition_key)
    keys, fp, profile, wh = fresh.keys, fresh.fingerprint, study.profile_name, study.warehouse()
    if fresh.fresh(wh, profile):
        stored = wh.read_partition("dataset_similarity", profile, keys)
        res = skipped(context, wh, "dataset_similarity", profile, keys, fp)
        return dg.MaterializeResult(metadata=res.metadata, data_version=res.data_version,
                                    check_results=[finite_in_range_check("text_similarity", stored[["measure", "value"]], RANGES)])
    bench = wh.read_partition("benchmark_examples", profile, {"benchmark": keys["benchmark"]})
    corpus = wh.read_partition("corpus_documents", profile, {"corpus": keys["corpus"]})
    examples, dataset = text_similarity_rows(bench, corpus, N_BOOT[profile], GZIP_PAIRS[profile], study.profile_spec().seed,
                                             wh.fingerprint("corpus_documents", profile, {"corpus": keys["corpus"]}))
    common = {"corpus": keys["corpus"], "benchmark": keys["benchmark"], "model": ""}
    wh.write_partition("example_similarity", profile, keys, examples.assign(**common), fp)
    wh.write_partition("dataset_similarity", profile, keys, dataset.assign(**common), fp)
    contaminated = float(dataset.loc[dataset["measure"] == "contaminated_fraction_13", "value"].iloc[0])
    return dg.MaterializeResult(
        metadata={"examples": len(bench), "corpus_docs": len(corpus), "contaminated_fraction_13": contaminated,
                  "dataset_measures": table_md(dataset[["measure", "value", "ci_low", "ci_high"]]), "fingerprint": fp[:16]},
        data_version=dg.DataVersion(fp),
        check_results=[finite_in_range_check("text_similarity", pd.concat([examples[["measure", "value"]].dropna(),
                                                                             dataset[["measure", "value"]]]), RANGES)],
    )

