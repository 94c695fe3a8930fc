"""Accuracy of each registered model on each benchmark (lm-eval, with per-example samples)."""


from functools import lru_cache
from importlib.metadata import version

import dagster as dg
import pandas as pd

from simassets.core.hashing import canonical_json
from simassets.defs.benchmarks import benchmark_examples
from simassets.defs.checks import scores_in_unit_check, scores_in_unit_spec
from simassets.defs.common import (Freshness, no_retry_on_bad_input, partition_fingerprint, skipped, table_md,
                                   upstream_fingerprint)
from simassets.defs.partitions import keys_of, model_benchmark_partitions
from simassets.defs.resources import StudyResource

CODE_VERSION = "2"  # +input NLL of every example from the evaluation pass


@lru_cache(maxsize=4)
def _lm(spec, batch_size: int, max_length: int):
    """One lm-eval wrapper per (model, batch size, max length) per process: the model loads once."""
    from simassets.core.evaluation import make_lm
    from simassets.core.models import load_causal_lm

    loaded = load_causal_lm(spec)
    return make_lm(loaded.model, loaded.tokenizer, batch_size=batch_size, max_length=max_length), loaded


def benchmark_evaluation_freshness(study: StudyResource, partition_key: str) -> Freshness:
    from simassets.core.models import model_fingerprint

    keys = keys_of(model_benchmark_partitions, partition_key)
    registry, profile, prof = study.models(), study.profile_name, study.profile_spec()
    if keys["model"] not in registry:
        raise dg.Failure(f"model {keys['model']!r} is not in the registry {study.catalog_path / 'models.toml'}")
    spec = registry[keys["model"]]
    fp = partition_fingerprint(
        "benchmark_evaluation", CODE_VERSION,
        examples=upstream_fingerprint(study.warehouse(), "benchmark_examples", profile, {"benchmark": keys["benchmark"]}),
        model=model_fingerprint(spec), dtype=spec.dtype, max_length=prof.max_length, lm_eval=version("lm_eval"),
    )
    return Freshness(("example_results", "benchmark_scores"), keys, fp)


@dg.asset(
    partitions_def=model_benchmark_partitions,
    deps=[benchmark_examples],
    group_name="evaluation",
    kinds={"pytorch", "parquet"},
    code_version=CODE_VERSION,
    pool="model",
    retry_policy=dg.RetryPolicy(max_retries=2, delay=5),
    check_specs=[scores_in_unit_spec("benchmark_evaluation")],
)
@no_retry_on_bad_input
def benchmark_evaluation(context: dg.AssetExecutionContext, study: StudyResource) -> dg.MaterializeResult:
    """lm-eval accuracy of one model on one benchmark (acc, acc_norm, random-baseline-normalised score, stderr, n) and per-example correctness with gold and chosen log-likelihoods."""
    from simassets.core.models import model_fingerprint

    fresh = benchmark_evaluation_freshness(study, context.partition_key)
    keys, fp = fresh.keys, fresh.fingerprint
    model_id, bench = keys["model"], keys["benchmark"]
    profile, wh, prof, cat = study.profile_name, study.warehouse(), study.profile_spec(), study.catalog()
    spec, bspec = study.models()[model_id], cat.benchmarks[bench]
    weights_fp = model_fingerprint(spec)
    if fresh.fresh(wh, profile):
        row = wh.read_partition("benchmark_scores", profile, keys).iloc[0]
        res = skipped(context, wh, "benchmark_scores", profile, keys, fp)
        return dg.MaterializeResult(metadata=res.metadata, data_version=res.data_version, check_results=[
            scores_in_unit_check("benchmark_evaluation", {"acc": row["acc"], "acc_norm": row["acc_norm"]})])
    from simassets.core.evaluation import evaluate_benchmark

    context.log.info(f"evaluating {model_id} on {bench} (limit {prof.benchmark_limit})")
    lm, loaded = _lm(spec, prof.eval_batch_size, prof.max_length)
    context.log.info(f"model {model_id}: {loaded.n_params:,} parameters, loaded in {loaded.load_seconds:.1f}s"
                     + (" (GGUF from the de-quantized cache)" if loaded.from_cache else ""))
    result = evaluate_benchmark(lm, bspec, study.data_root_path, prof.benchmark_limit, prof.seed, bspec.num_fewshot)
    context.log.info(f"evaluated {model_id} on {bench}: {len(result.examples)} examples in {result.seconds:.1f}s")
    expected = set(wh.read_partition("benchmark_examples", profile, {"benchmark": bench})["example_id"])
    got = {e.example_id for e in result.examples}
    if got != expected:
        raise dg.Failure(f"{bench}: evaluated examples {sorted(got - expected)[:5]} / missing {sorted(expected - got)[:5]} "
                         "differ from benchmark_examples; re-materialize benchmark_examples")
    params = canonical_json({**result.params, "dtype": spec.dtype, "model_kind": spec.kind})
    ex = pd.DataFrame([{
        "model": model_id, "benchmark": bench, "example_id": e.example_id, "correct": e.correct,
        "correct_norm": e.correct_norm, "gold_loglik": e.gold_loglik, "gold_n_tokens": e.gold_n_tokens,
        "chosen": e.chosen, "chosen_loglik": e.chosen_loglik, "choice_logliks": list(e.choice_logliks),
        "input_nll": e.input_nll, "input_n_tokens": e.input_n_tokens, "params": params} for e in result.examples])
    s = result.score
    scores = pd.DataFrame([{
        "model": model_id, "benchmark": bench, "category": bspec.category, "language": bspec.language,
        "n": s.n, "acc": s.acc, "acc_stderr": s.acc_stderr, "acc_norm": s.acc_norm, "acc_norm_stderr": s.acc_norm_stderr,
        "primary_metric": s.primary_metric, "random_baseline": s.random_baseline,
        "normalized_score": s.normalized_score, "model_fingerprint": weights_fp, "params": params}])
    wh.write_partition("example_results", profile, keys, ex, fp)
    wh.write_partition("benchmark_scores", profile, keys, scores, fp)
    return dg.MaterializeResult(
        metadata={"n": s.n, "acc": s.acc, "acc_stderr": s.acc_stderr, "acc_norm": s.acc_norm,
                  "normalized_score": s.normalized_score, "random_baseline": s.random_baseline,
                  "seconds": round(result.seconds, 2), "examples_per_second": round(s.n / max(result.seconds, 1e-9), 2),
                  "model_fingerprint": weights_fp[:16], "scores": table_md(scores[["n", "acc", "acc_norm", "normalized_score"]]),
                  "fingerprint": fp[:16]},
        data_version=dg.DataVersion(fp),
        check_results=[scores_in_unit_check("benchmark_evaluation", {"acc": s.acc, "acc_norm": s.acc_norm})],
    )
