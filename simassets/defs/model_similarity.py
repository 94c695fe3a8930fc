"""Model-based similarity: input/target perplexity, unigram KL with the model's tokenizer, corpus perplexity."""

import json
from functools import lru_cache

import dagster as dg
import numpy as np
import pandas as pd

from simassets.core.hashing import canonical_json
from simassets.defs.checks import finite_in_range_check, finite_in_range_spec
from simassets.defs.common import Freshness, no_retry_on_bad_input, partition_fingerprint, skipped, table_md, upstream_fingerprint
from simassets.defs.corpora import corpus_documents
from simassets.defs.evaluation import benchmark_evaluation
from simassets.defs.partitions import keys_of, model_benchmark_partitions, model_corpus_partitions
from simassets.defs.resources import StudyResource

CODE_VERSION = "2"  # 2: input perplexity from the evaluation's forward pass
N_BOOT = {"quick": 200, "full": 1000}
# corpus perplexity: documents scored per corpus and the tokens kept of each (a seeded prefix of the sample)
CORPUS_PPL = {"quick": (20, 256), "full": (200, 1024)}  # quick: ~5k tokens per corpus, ~1/4 of its model passes
RANGES = {"input_perplexity": (1.0, np.inf), "target_perplexity": (1.0, np.inf), "corpus_perplexity": (1.0, np.inf),
          "unigram_kl": (0.0, np.inf), "unigram_js": (0.0, np.log(2))}


def _loaded(study: StudyResource, model_id: str):
    from simassets.core.models import load_causal_lm

    return load_causal_lm(study.models()[model_id])


@lru_cache(maxsize=64)
def _corpus_token_ids(model_id: str, corpus_fp: str, texts: tuple[str, ...], tokenizer) -> list[np.ndarray]:
    """Token ids of a corpus sample under a model's tokenizer, once per (model, corpus content) per process."""
    from simassets.core.measures.tokens import encode_texts

    return encode_texts(list(texts), tokenizer)


def model_similarity_freshness(study: StudyResource, partition_key: str) -> Freshness:
    from simassets.core.models import model_fingerprint

    keys = keys_of(model_benchmark_partitions, partition_key)
    profile, wh, cat = study.profile_name, study.warehouse(), study.catalog()
    corpora = {c.name: upstream_fingerprint(wh, "corpus_documents", profile, {"corpus": c.name})
               for c in cat.corpora_for(profile)}
    fp = partition_fingerprint(
        "model_similarity", CODE_VERSION, n_boot=N_BOOT[profile], seed=study.profile_spec().seed, corpora=corpora,
        model=model_fingerprint(study.models()[keys["model"]]),
        results=upstream_fingerprint(wh, "benchmark_scores", profile, keys),
    )
    return Freshness(("example_similarity", "dataset_similarity"), {**keys, "asset": "model_similarity"}, fp)


def perplexity_rows(bench: pd.DataFrame, results: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Input and target perplexity per example and per benchmark, both from the evaluation's stored
    log-likelihoods (``example_results``): no forward pass of its own. Input perplexity covers the input's
    tokens after the first (lm-eval's encoding of the context); target perplexity the gold continuation."""
    from simassets.core.measures.model import aggregate_perplexity

    merged = bench[["example_id"]].merge(
        results[["example_id", "gold_loglik", "gold_n_tokens", "input_nll", "input_n_tokens"]], on="example_id")
    n_in = merged["input_n_tokens"].fillna(0).astype(int).to_numpy()
    s_in = merged["input_nll"].to_numpy(dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        input_ppl = np.where(n_in > 0, np.exp(s_in / np.maximum(n_in, 1)), np.nan)
        target_ppl = np.exp(-merged["gold_loglik"].to_numpy() / merged["gold_n_tokens"].to_numpy())
    examples = pd.concat([
        pd.DataFrame({"example_id": merged["example_id"].to_numpy(), "measure": "input_perplexity", "value": input_ppl,
                      "evidence": [f"{n} tokens" for n in n_in]}),
        pd.DataFrame({"example_id": merged["example_id"].to_numpy(), "measure": "target_perplexity", "value": target_ppl,
                      "evidence": [f"{n} tokens" for n in merged["gold_n_tokens"]]}),
    ], ignore_index=True)
    has_input = n_in > 0
    agg_in = aggregate_perplexity(s_in[has_input].tolist(), n_in[has_input].tolist()) if has_input.any() else None
    agg_t = aggregate_perplexity((-merged["gold_loglik"]).tolist(), merged["gold_n_tokens"].tolist())
    dataset = pd.DataFrame(  # no input row when no example has an input token to score
        ([{"measure": "input_perplexity", "value": agg_in.token_weighted, "n": agg_in.n_examples}] if agg_in else [])
        + [{"measure": "target_perplexity", "value": agg_t.token_weighted, "n": agg_t.n_examples}])
    return examples, dataset


@dg.asset(
    partitions_def=model_benchmark_partitions,
    deps=[benchmark_evaluation, dg.AssetDep(corpus_documents, partition_mapping=dg.AllPartitionMapping())],
    group_name="similarity",
    kinds={"pytorch", "parquet"},
    code_version=CODE_VERSION,
    pool="model",
    retry_policy=dg.RetryPolicy(max_retries=2, delay=5),
    check_specs=[finite_in_range_spec("model_similarity")],
)
@no_retry_on_bad_input
def model_similarity(context: dg.AssetExecutionContext, study: StudyResource) -> dg.MaterializeResult:
    """Per model and benchmark: input perplexity (rendered input) and target perplexity (gold continuation), both read from the evaluation's own forward pass, per example and token-weighted per benchmark; and unigram KL (with bootstrap CI) and JS of the benchmark against every corpus sample under the model's tokenizer."""
    from simassets.core.measures.tokens import encode_texts, unigram_measures

    fresh = model_similarity_freshness(study, context.partition_key)
    keys, fp, profile, wh = fresh.keys, fresh.fingerprint, study.profile_name, study.warehouse()
    model_id, bench_name = keys["model"], keys["benchmark"]
    if fresh.fresh(wh, profile):
        stored = wh.read_partition("dataset_similarity", profile, keys)
        res = skipped(context, wh, "dataset_similarity", profile, keys, fp)
        return dg.MaterializeResult(metadata=res.metadata, data_version=res.data_version,
                                    check_results=[finite_in_range_check("model_similarity", stored[["measure", "value"]], RANGES)])
    loaded = _loaded(study, model_id)
    bench = wh.read_partition("benchmark_examples", profile, {"benchmark": bench_name})
    results = wh.read_partition("example_results", profile, {"model": model_id, "benchmark": bench_name})
    prof = study.profile_spec()
    if "input_nll" not in results or results["input_nll"].isna().all():
        raise dg.Failure(f"example_results[{model_id}, {bench_name}] has no input NLL (stored by an older version): "
                         "re-materialize benchmark_evaluation for this partition")
    ex, ds = perplexity_rows(bench, results)
    eval_params = json.loads(results["params"].iloc[0])
    ppl_params = canonical_json({"model": model_id, "model_fingerprint": loaded.fingerprint,
                                 "max_length": eval_params.get("max_length"), "dtype": eval_params.get("dtype"),
                                 "dataset_level": "token-weighted exp(sum nll / sum tokens)",
                                 "input_source": "example_results.input_nll (the evaluation's forward pass)",
                                 "target_source": "example_results.gold_loglik (no extra forward pass)"})
    ex, ds = ex.assign(corpus="", params=ppl_params), ds.assign(corpus="", params=ppl_params)
    bench_ids = encode_texts((bench["input_text"] + bench["target_text"]).tolist(), loaded.tokenizer)
    uni_rows = []
    for corpus in study.catalog().corpora_for(profile):
        docs = wh.read_partition("corpus_documents", profile, {"corpus": corpus.name})
        cfp = wh.fingerprint("corpus_documents", profile, {"corpus": corpus.name}) or ""
        corpus_ids = _corpus_token_ids(model_id, cfp, tuple(docs["text"]), loaded.tokenizer)
        u = unigram_measures(bench_ids, corpus_ids, vocab_size=len(loaded.tokenizer), n_boot=N_BOOT[profile], seed=prof.seed)
        params = canonical_json({k: u[k] for k in ("eps", "n_boot", "seed", "ci", "log_base", "dim")}
                                | {"tokenizer": model_id, "ci_method": "basic bootstrap over corpus documents"})
        uni_rows += [{"corpus": corpus.name, "measure": "unigram_kl", "value": u["kl"], "ci_low": u["kl_basic_ci_low"],
                      "ci_high": u["kl_basic_ci_high"], "n": len(bench), "params": params},
                     {"corpus": corpus.name, "measure": "unigram_js", "value": u["js"], "n": len(bench), "params": params}]
    dataset = pd.concat([ds, pd.DataFrame(uni_rows)], ignore_index=True).reindex(
        columns=["corpus", "measure", "value", "ci_low", "ci_high", "n", "warning", "params"])
    common = {"benchmark": bench_name, "model": model_id}
    wh.write_partition("example_similarity", profile, keys, ex.assign(**common), fp)
    wh.write_partition("dataset_similarity", profile, keys, dataset.assign(**common), fp)
    checked = pd.concat([ex[["measure", "value"]].dropna(), dataset[["measure", "value"]]])
    return dg.MaterializeResult(
        metadata={"examples": len(bench), "forward_passes_added": int(eval_params.get("input_nll_extra_passes") or 0),
                  "input_tokens": int(results["input_n_tokens"].fillna(0).sum()),
                  "dataset_measures": table_md(dataset[["corpus", "measure", "value", "ci_low", "ci_high"]]), "fingerprint": fp[:16]},
        data_version=dg.DataVersion(fp),
        check_results=[finite_in_range_check("model_similarity", checked, RANGES)],
    )


def corpus_perplexity_freshness(study: StudyResource, partition_key: str) -> Freshness:
    from simassets.core.models import model_fingerprint

    keys = keys_of(model_corpus_partitions, partition_key)
    profile = study.profile_name
    fp = partition_fingerprint(
        "corpus_perplexity", CODE_VERSION, setup=CORPUS_PPL[profile], model=model_fingerprint(study.models()[keys["model"]]),
        corpus=upstream_fingerprint(study.warehouse(), "corpus_documents", profile, {"corpus": keys["corpus"]}),
    )
    return Freshness(("dataset_similarity",), {**keys, "asset": "corpus_perplexity"}, fp)


@dg.asset(
    partitions_def=model_corpus_partitions,
    deps=[corpus_documents],
    group_name="similarity",
    kinds={"pytorch", "parquet"},
    code_version=CODE_VERSION,
    pool="model",
    retry_policy=dg.RetryPolicy(max_retries=2, delay=5),
)
@no_retry_on_bad_input
def corpus_perplexity(context: dg.AssetExecutionContext, study: StudyResource) -> dg.MaterializeResult:
    """How in-distribution a corpus sample is for a model: token-weighted perplexity of (a seeded prefix of) the sample's documents, each truncated to a fixed number of tokens."""
    from simassets.core.measures.model import aggregate_perplexity, sequence_nll

    fresh = corpus_perplexity_freshness(study, context.partition_key)
    keys, fp, profile, wh = fresh.keys, fresh.fingerprint, study.profile_name, study.warehouse()
    if fresh.fresh(wh, profile):
        return skipped(context, wh, "dataset_similarity", profile, keys, fp)
    n_docs, max_length = CORPUS_PPL[profile]
    docs = wh.read_partition("corpus_documents", profile, {"corpus": keys["corpus"]}).head(n_docs)
    loaded = _loaded(study, keys["model"])
    nll = sequence_nll(loaded.model, loaded.tokenizer, docs["text"].tolist(), max_length=max_length,
                       batch_size=study.profile_spec().eval_batch_size)
    agg = aggregate_perplexity([r.nll_sum for r in nll], [r.n_tokens for r in nll])
    params = canonical_json({"model": keys["model"], "model_fingerprint": loaded.fingerprint, "docs": len(docs),
                             "max_length": max_length, "truncated_docs": sum(r.truncated for r in nll),
                             "mean_of_document_perplexities": agg.mean_of_examples})
    row = pd.DataFrame([{"corpus": keys["corpus"], "benchmark": "", "model": keys["model"], "measure": "corpus_perplexity",
                         "value": agg.token_weighted, "ci_low": None, "ci_high": None, "n": len(docs), "warning": None,
                         "params": params}])
    wh.write_partition("dataset_similarity", profile, keys, row, fp)
    return dg.MaterializeResult(
        metadata={"perplexity": agg.token_weighted, "docs": len(docs), "tokens": agg.n_tokens, "fingerprint": fp[:16]},
        data_version=dg.DataVersion(fp),
    )
