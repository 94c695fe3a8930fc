"""Evaluation speed and parity: lm-eval's plain ``HFLM`` against the prefix-tree scorer (``simassets-hf``).

In one run, on the same benchmarks and examples (default: ARC-Easy, HellaSwag, PIQA, WinoGrande, MMLU high-school
biology and XCOPA-sw, 100 examples each, fp32, batch 8), prints per benchmark and overall: tokens forwarded, seconds,
examples/s, the speed ratio, and whether every answer is the same and by how much the log-likelihoods differ.

``--memory MODEL`` runs the prefix-tree scorer alone for a model at the full profile's batch size (with AGIEval's
long contexts added) in a fresh process and prints its peak resident memory. ``--project`` counts, through lm-eval's
own request construction, the tokens the full profile's evaluation forwards with each scorer, and projects its time
per model from the tokens/s measured here. ``--bf16`` adds the bfloat16 parity check of earlier sessions.

lm-eval's ``HFLM`` runs the model as ``transformers`` does; ``simassets-hf`` runs it as the project loads it, its
linear layers through oneDNN where that is faster on this CPU (:mod:`simassets.core.kernels`). ``--kernel-noise`` runs
``HFLM`` a second time on the oneDNN model, to separate what the kernels alone move from the scorer's own difference.
``--fp64 LIMIT`` checks exactness without fp32 rounding: a float64 copy of the model, scored by ``simassets-hf`` and by
``HFLM`` at two batch sizes.

    .venv/bin/python benchmarks/evaluation.py [--model smollm2-135m-instruct] [--limit 100] [--memory gemma-3-270m]
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import resource
import sys
import time

from simassets.core import budget, paths
from simassets.core.catalog import load_catalog
from simassets.core.evaluation import evaluate_benchmark, make_lm
from simassets.core.kernels import plain_linears
from simassets.core.models import clear_model_cache, load_causal_lm, load_registry

BENCHMARKS = ("arc_easy", "hellaswag", "piqa", "winogrande", "mmlu_high_school_biology", "xcopa_sw")


def max_loglik_delta(a, b) -> float:
    """The largest difference between two evaluations' log-likelihoods of the same choices."""
    return max(abs(x - y) for ea, eb in zip(a.examples, b.examples)
               for x, y in zip(ea.choice_logliks, eb.choice_logliks))


def plain_lm(loaded, batch_size: int, max_length: int):
    """lm-eval's own ``HFLM`` (the baseline), counting the padded tokens it forwards."""
    from lm_eval.models.huggingface import HFLM

    class CountingHFLM(HFLM):
        padded = 0

        def _model_call(self, inps, attn_mask=None, labels=None):
            type(self).padded += int(inps.numel())
            return super()._model_call(inps, attn_mask=attn_mask, labels=labels)

    return CountingHFLM(pretrained=loaded.model, tokenizer=loaded.tokenizer, batch_size=batch_size,
                        max_length=max_length)


def compare(args) -> None:
    import torch

    torch.set_num_threads(budget.cores())
    catalog, spec = load_catalog(), load_registry()[args.model]
    loaded = load_causal_lm(spec)
    # lm-eval's HFLM runs the model as transformers does (torch's own GEMM); simassets-hf runs it as the project
    # loads it, its linear layers through oneDNN where that is faster here (simassets.core.kernels)
    baseline = dataclasses.replace(loaded, model=plain_linears(copy.deepcopy(loaded.model)), linear_backend="aten")
    print(f"simassets-hf linear layers: {loaded.linear_backend}; lm-eval HFLM: torch's own", flush=True)
    rows, tot = [], {"plain_s": 0.0, "shared_s": 0.0, "plain_tok": 0, "shared_tok": 0, "n": 0, "same": True, "dmax": 0.0}
    for name in args.benchmarks:
        bench = catalog.benchmarks[name]
        base = plain_lm(baseline, args.batch_size, args.max_length)
        t0 = time.perf_counter()
        a = evaluate_benchmark(base, bench, paths.data_root(), args.limit, args.seed, input_nll=args.input_nll)
        plain_s = time.perf_counter() - t0
        shared = make_lm(loaded.model, loaded.tokenizer, batch_size=args.batch_size, max_length=args.max_length,
                         token_budget=args.token_budget)
        stats = []
        real = shared._loglikelihood_tokens

        def counted(requests, disable_tqdm=False, override_bs=None, _real=real):
            out = _real(requests, disable_tqdm=disable_tqdm, override_bs=override_bs)
            stats.append(shared.scoring_stats)
            return out

        shared._loglikelihood_tokens = counted
        t0 = time.perf_counter()
        b = evaluate_benchmark(shared, bench, paths.data_root(), args.limit, args.seed, input_nll=args.input_nll)
        shared_s = time.perf_counter() - t0
        tot.setdefault("distinct", []).append(sum(s.distinct for s in stats))
        plain_tok, shared_tok = type(base).padded, sum(s.padded for s in stats)  # what each really ran, padding too
        same = [e.chosen for e in a.examples] == [e.chosen for e in b.examples] and \
            [e.correct for e in a.examples] == [e.correct for e in b.examples]
        dmax = max_loglik_delta(a, b)
        if args.kernel_noise and loaded.linear_backend != "aten":
            # lm-eval's HFLM once more, on the model as simassets-hf runs it: what the kernels alone move, and the
            # scorer's own difference from lm-eval at equal kernels
            t0 = time.perf_counter()
            c = evaluate_benchmark(plain_lm(loaded, args.batch_size, args.max_length), bench, paths.data_root(),
                                   args.limit, args.seed, input_nll=args.input_nll)
            same_s = time.perf_counter() - t0
            kernel_d, scorer_d = max_loglik_delta(a, c), max_loglik_delta(b, c)
            kernel_same = [e.chosen for e in a.examples] == [e.chosen for e in c.examples]
            print(f"{'':26s} lm-eval HFLM on {loaded.linear_backend}: {same_s:6.1f}s; against lm-eval on torch's GEMM "
                  f"max |dll| {kernel_d:.1e} (answers {'identical' if kernel_same else 'DIFFER'}); simassets-hf "
                  f"against it {scorer_d:.1e}, {same_s / shared_s:4.2f}x faster", flush=True)
            tot["kernel_d"] = max(tot.get("kernel_d", 0.0), kernel_d)
            tot["scorer_d"] = max(tot.get("scorer_d", 0.0), scorer_d)
            tot["same_s"] = tot.get("same_s", 0.0) + same_s
        n = a.score.n
        rows.append((name, n, plain_tok, plain_s, shared_tok, shared_s, same, dmax, a.score.acc))
        for k, v in (("plain_s", plain_s), ("shared_s", shared_s), ("plain_tok", plain_tok), ("shared_tok", shared_tok), ("n", n)):
            tot[k] += v
        tot["same"] &= same
        tot["dmax"] = max(tot["dmax"], dmax)
        print(f"{name:26s} n={n:4d}  lm-eval HFLM {plain_tok:8,d} tok {plain_s:7.1f}s {n / plain_s:6.2f} ex/s | "
              f"simassets-hf {shared_tok:8,d} tok {shared_s:7.1f}s {n / shared_s:6.2f} ex/s | "
              f"{plain_s / shared_s:4.2f}x  answers {'identical' if same else 'DIFFER'}  max |dll| {dmax:.1e}  "
              f"acc {a.score.acc:.3f}", flush=True)
    print(f"\noverall ({len(rows)} benchmarks, {tot['n']} examples, {args.model}, fp32, batch {args.batch_size}, "
          f"{budget.cores()} threads): lm-eval HFLM {tot['plain_tok']:,} tokens in {tot['plain_s']:.1f}s, "
          f"simassets-hf {tot['shared_tok']:,} tokens in {tot['shared_s']:.1f}s: "
          f"{tot['plain_s'] / tot['shared_s']:.2f}x faster, {tot['plain_tok'] / tot['shared_tok']:.2f}x fewer tokens; "
          f"(the prefix tree holds {sum(tot['distinct']):,} distinct tokens, the fewest an exact scorer can run); "
          f"answers {'identical' if tot['same'] else 'DIFFER'}; max |delta loglik| {tot['dmax']:.1e}")
    if "kernel_d" in tot:
        print(f"kernels: lm-eval HFLM on {loaded.linear_backend} against lm-eval on torch's GEMM: max |delta loglik| "
              f"{tot['kernel_d']:.1e}; simassets-hf against lm-eval on {loaded.linear_backend}: {tot['scorer_d']:.1e}, "
              f"{tot['same_s'] / tot['shared_s']:.2f}x faster ({tot['same_s']:.1f}s against {tot['shared_s']:.1f}s)")
    print(json.dumps({"speedup": tot["plain_s"] / tot["shared_s"], "shared_tokens_per_s": tot["shared_tok"] / tot["shared_s"],
                      "plain_tokens_per_s": tot["plain_tok"] / tot["plain_s"], "identical": tot["same"]}))


def memory(args) -> None:
    """Peak resident memory of the prefix-tree scorer for one model at the full profile's batch size."""
    catalog = load_catalog()
    full = catalog.profile("full")
    spec = load_registry()[args.memory]
    load_causal_lm(spec)  # from the de-quantized cache (the benchmark warms it first)
    after_load = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    loaded = load_causal_lm(spec)
    lm = make_lm(loaded.model, loaded.tokenizer, batch_size=full.eval_batch_size, max_length=full.max_length)
    seconds = 0.0
    for name in (*args.benchmarks, "agi_eval_lsat_rc"):
        t0 = time.perf_counter()
        res = evaluate_benchmark(lm, catalog.benchmarks[name], paths.data_root(), args.memory_limit, args.seed)
        seconds += time.perf_counter() - t0
        print(f"  {args.memory} {name}: {res.score.n} examples in {time.perf_counter() - t0:.1f}s", flush=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{args.memory}: peak resident memory {peak / 1024:.2f} GB (after loading the model {after_load / 1024:.2f} GB) at "
          f"the full profile's batch size {full.eval_batch_size} (token budget {lm.token_budget:,}), max_length "
          f"{full.max_length}; {seconds:.0f}s for {len(args.benchmarks) + 1} benchmarks x {args.memory_limit}")


def project(args, speeds: dict[str, float]) -> None:
    """The full profile's evaluation tokens under each scorer (lm-eval's own requests) and projected hours."""
    from simassets.core.evaluation import scoring_lm_class
    from simassets.core.scoring import ScoringStats

    catalog, registry = load_catalog(), load_registry()
    full = catalog.profile("full")
    for model_id in args.project:
        loaded = load_causal_lm(registry[model_id])
        cls = scoring_lm_class()
        totals = ScoringStats()
        n_examples = 0

        class Counting(cls):  # lm-eval builds the requests; nothing is run (zeros keep its metrics consistent)
            def _loglikelihood_tokens(self, requests, disable_tqdm=False, override_bs=None):
                groups_stats = ScoringStats()
                score_tokens(requests, self.max_length, groups_stats)
                totals.plain += groups_stats.plain
                totals.forwarded += groups_stats.forwarded
                totals.distinct += groups_stats.distinct
                return [(0.0, False)] * len(requests)

        lm = Counting(pretrained=loaded.model, tokenizer=loaded.tokenizer, batch_size=full.eval_batch_size,
                      max_length=full.max_length)
        for b in catalog.benchmarks_for("full"):
            res = evaluate_benchmark(lm, b, paths.data_root(), full.benchmark_limit, full.seed, b.num_fewshot,
                                     input_nll=False)  # nothing runs: no input NLL to read off
            n_examples += res.score.n
        tps = speeds.get(model_id)
        hours = f"{totals.forwarded / tps / 3600:.2f} h projected at the {tps:.0f} tok/s measured here" if tps else ""
        print(f"full profile, {model_id}: {n_examples:,} examples; lm-eval forwards {totals.plain:,} tokens, "
              f"simassets-hf {totals.forwarded:,} ({totals.plain / max(totals.forwarded, 1):.2f}x fewer; the "
              f"prefix tree holds {totals.distinct:,} distinct); {hours}")


def score_tokens(requests, max_length: int, stats) -> None:
    """The tokens :func:`simassets.core.scoring.score` would forward for ``requests`` (planning only)."""
    from simassets.core.scoring import DEFAULT_ROW_TOKENS, DEFAULT_TOKEN_BUDGET, items_for, passes_for

    items = items_for([(ctx, cont) for _, ctx, cont in requests], max_length)
    passes_for(items, max_length, DEFAULT_ROW_TOKENS["cpu"], DEFAULT_TOKEN_BUDGET["cpu"], stats)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--benchmarks", default=",".join(BENCHMARKS), type=lambda s: s.split(","))
    ap.add_argument("--limit", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-length", type=int, default=2048)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--token-budget", type=int, help="tokens per forward pass of simassets-hf (default: per device)")
    ap.add_argument("--input-nll", action="store_true",
                    help="also the input NLL of every example (the pipeline's evaluation: plain HFLM needs a pass "
                         "per input for it, simassets-hf reads it off its own passes)")
    ap.add_argument("--memory", metavar="MODEL", help="peak memory of the prefix-tree scorer for MODEL (own process)")
    ap.add_argument("--memory-limit", type=int, default=20)
    ap.add_argument("--project", action="append", metavar="MODEL", help="project the full profile's time for MODEL")
    ap.add_argument("--speed", action="append", default=[], metavar="MODEL=TOK_S", help="tok/s for --project")
    ap.add_argument("--bf16", action="store_true", help="also the bfloat16 parity check (answers changed)")
    ap.add_argument("--kernel-noise", action="store_true",
                    help="also lm-eval's HFLM on the model with simassets-hf's kernels: what the kernels alone move")
    ap.add_argument("--fp64", type=int, metavar="LIMIT",
                    help="only the exactness check in float64 on LIMIT examples per benchmark (no kernel noise)")
    args = ap.parse_args()
    if args.fp64:
        fp64_check(args)
        return
    if args.memory and not args.project:
        memory(args)
        return
    if args.project:
        project(args, {k: float(v) for k, v in (s.split("=") for s in args.speed)})
        return
    compare(args)
    if args.bf16:
        bf16_check(args)


def fp64_check(args) -> None:
    """The scorer's exactness without fp32 rounding: a float64 copy of the model, scored by simassets-hf and by
    lm-eval's HFLM at batch 8 and at batch 1 (lm-eval's own batch-size spread is the yardstick)."""
    import torch

    torch.set_num_threads(budget.cores())
    catalog, spec = load_catalog(), load_registry()[args.model]
    loaded = load_causal_lm(spec)
    m64 = plain_linears(copy.deepcopy(loaded.model)).double()
    l64 = dataclasses.replace(loaded, model=m64, linear_backend="aten")
    worst, spread, same_all = 0.0, 0.0, True
    for name in args.benchmarks:
        bench = catalog.benchmarks[name]
        runs = [evaluate_benchmark(lm, bench, paths.data_root(), args.fp64, args.seed)
                for lm in (plain_lm(l64, args.batch_size, args.max_length), plain_lm(l64, 1, args.max_length),
                           make_lm(m64, loaded.tokenizer, batch_size=args.batch_size, max_length=args.max_length))]
        d, d_lm = max_loglik_delta(runs[2], runs[0]), max_loglik_delta(runs[1], runs[0])
        same = [e.chosen for e in runs[0].examples] == [e.chosen for e in runs[2].examples]
        worst, spread, same_all = max(worst, d), max(spread, d_lm), same_all and same
        print(f"{name:26s} n={runs[0].score.n:4d}  float64: simassets-hf against lm-eval (batch {args.batch_size}) "
              f"max |dll| {d:.1e}; lm-eval batch 1 against batch {args.batch_size} {d_lm:.1e}; answers "
              f"{'identical' if same else 'DIFFER'}", flush=True)
    print(f"float64 ({args.fp64} examples per benchmark): simassets-hf against lm-eval max |delta loglik| {worst:.1e}; "
          f"lm-eval against itself at another batch size {spread:.1e}; answers {'identical' if same_all else 'DIFFER'}")


def bf16_check(args) -> None:
    catalog, spec = load_catalog(), load_registry()[args.model]
    bench = catalog.benchmarks["boolq"]
    runs = {}
    for dtype in ("float32", "bfloat16"):
        clear_model_cache()
        loaded = load_causal_lm(dataclasses.replace(spec, dtype=dtype))
        runs[dtype] = evaluate_benchmark(make_lm(loaded.model, loaded.tokenizer), bench, paths.data_root(), 30, args.seed)
    changed = sum(a.chosen != b.chosen for a, b in zip(runs["float32"].examples, runs["bfloat16"].examples))
    print(f"bfloat16 vs float32 on BoolQ x30: {changed} answer(s) changed")


if __name__ == "__main__":
    sys.exit(main())
