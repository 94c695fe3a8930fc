"""Accuracy of each registered model on each benchmark (lm-eval, with per-example samples)."""

from functools import lru_cache
from importlib.metadata import version

import dagster as dg
import pandas as pd

from simassets.core import stats
from simassets.core.computation import (SCORES_IN_UNIT, Call, Computation, Output, Scope, Upstream, benchmark_chars,
                                        table_md)
from simassets.core.hashing import canonical_json
from simassets.core.schema import BENCHMARK_EXAMPLES, BENCHMARK_SCORES, EXAMPLE_RESULTS
from simassets.defs.factory import build


@lru_cache(maxsize=4)
def _lm(spec, batch_size: int, max_length: int):
    """One lm-eval wrapper per (model, batch size, max length) per process: the model loads once."""
    from simassets.core.evaluation import make_lm
    from simassets.core.models import load_causal_lm

    loaded = load_causal_lm(spec)
    return make_lm(loaded.model, loaded.tokenizer, batch_size=batch_size, max_length=max_length), loaded


def _inputs(scope: Scope, keys) -> dict:
    from simassets.core.models import model_fingerprint

    spec = scope.models[keys["model"]]
    return {"examples": scope.upstream(BENCHMARK_EXAMPLES, {"benchmark": keys["benchmark"]}),
            "model": model_fingerprint(spec), "dtype": spec.dtype, "max_length": scope.spec.max_length,
            "lm_eval": version("lm_eval"),
            # an explicit device is part of the result's identity; `auto` is not (see resolve_device)
            **({"device": spec.device} if spec.device != "auto" else {})}


def _evaluate(call: Call) -> Output:
    from simassets.core.evaluation import evaluate_benchmark

    model_id, bench = call.keys["model"], call.keys["benchmark"]
    scope, prof = call.scope, call.scope.spec
    spec, bspec = scope.models[model_id], scope.catalog.benchmarks[bench]
    call.log(f"evaluating {model_id} on {bench} (limit {prof.benchmark_limit})")
    lm, loaded = _lm(spec, prof.eval_batch_size, prof.max_length)
    call.log(f"model {model_id}: {loaded.n_params:,} parameters, loaded in {loaded.load_seconds:.1f}s"
             + (" (GGUF from the de-quantized cache)" if loaded.from_cache else ""))
    result = evaluate_benchmark(lm, bspec, scope.data_root, prof.benchmark_limit, prof.seed, bspec.num_fewshot)
    call.log(f"evaluated {model_id} on {bench}: {len(result.examples)} examples in {result.seconds:.1f}s")
    expected = set(call.read(BENCHMARK_EXAMPLES, benchmark=bench)["example_id"])
    got = {e.example_id for e in result.examples}
    if got != expected:
        raise ValueError(f"{bench}: evaluated examples {sorted(got - expected)[:5]} / missing "
                         f"{sorted(expected - got)[:5]} differ from benchmark_examples; re-materialize benchmark_examples")
    params = canonical_json({**result.params, "dtype": spec.dtype, "model_kind": spec.kind,
                             "device": str(loaded.model.device), "linear": loaded.linear_backend})
    ex = pd.DataFrame([{
        "example_id": e.example_id, "correct": e.correct, "correct_norm": e.correct_norm, "gold_loglik": e.gold_loglik,
        "gold_n_tokens": e.gold_n_tokens, "chosen": e.chosen, "chosen_loglik": e.chosen_loglik,
        "choice_logliks": list(e.choice_logliks), "input_nll": e.input_nll, "input_n_tokens": e.input_n_tokens,
        "params": params} for e in result.examples])
    s = result.score
    (acc_lo,), (acc_hi,) = stats.wilson_interval([s.acc * s.n], [s.n])
    norm_k = s.acc_norm * s.n if s.acc_norm is not None else float("nan")
    (norm_lo,), (norm_hi,) = stats.wilson_interval([norm_k], [s.n])
    scores = pd.DataFrame([{
        "category": bspec.category, "language": bspec.language, "n": s.n, "acc": s.acc, "acc_stderr": s.acc_stderr,
        "acc_norm": s.acc_norm, "acc_norm_stderr": s.acc_norm_stderr, "primary_metric": s.primary_metric,
        "random_baseline": s.random_baseline, "normalized_score": s.normalized_score, "acc_ci_low": acc_lo,
        "acc_ci_high": acc_hi, "acc_norm_ci_low": norm_lo, "acc_norm_ci_high": norm_hi,
        "model_fingerprint": call.inputs["model"], "params": params}])
    return Output({EXAMPLE_RESULTS: ex, BENCHMARK_SCORES: scores}, metadata={
        "n": s.n, "acc": s.acc, "acc_stderr": s.acc_stderr, "acc_norm": s.acc_norm,
        "normalized_score": s.normalized_score, "random_baseline": s.random_baseline,
        "eval_seconds": round(result.seconds, 2), "examples_per_second": round(s.n / max(result.seconds, 1e-9), 2),
        "model_fingerprint": call.inputs["model"][:16],
        "scores": table_md(scores[["n", "acc", "acc_ci_low", "acc_ci_high", "acc_norm", "normalized_score"]])})


def _cost(scope: Scope, keys) -> float:
    """Characters the model reads for a benchmark: balances runs."""
    return benchmark_chars(scope, keys["benchmark"])


BENCHMARK_EVALUATION = Computation(
    name="benchmark_evaluation", group="evaluation", partitioning="model_x_benchmark",
    description="lm-eval accuracy of one model on one benchmark (acc, acc_norm, random-baseline-normalised score, "
                "stderr, n) and per-example correctness with gold and chosen log-likelihoods.",
    writes=(EXAMPLE_RESULTS, BENCHMARK_SCORES), inputs=_inputs, compute=_evaluate,
    upstream=(Upstream("benchmark_examples"),), kinds=("pytorch", "parquet"), pool="model", code_version="3",
    retries=2, checks=(SCORES_IN_UNIT,), cost=_cost)

defs = dg.Definitions(assets=build(BENCHMARK_EVALUATION))
